"""connect_first: all monitors tried at once, the first to greet kept, every other attempt
cancelled or closed; timeouts and failures reported as typed errors."""

from __future__ import annotations

import asyncio
import errno
import os
from collections.abc import AsyncIterator, Callable

import pytest
from fakeqmp import FakeQMPServer

from qctl.errors import QMPConnectionError, QMPTimeoutError
from qctl.qmp import connect_first, first

#: a bound for what must not wait at all: far below any timeout the attempts are given
PROMPTLY = 5.0
LONG_TIMEOUT = 60.0


async def wait_until(condition: Callable[[], bool]) -> None:
    while not condition():  # noqa: ASYNC110 - the servers change state in other tasks
        await asyncio.sleep(0.01)


class Monitors:
    """Fake monitors of one QEMU, each behaving as its mode says."""

    def __init__(self, sockdir: str) -> None:
        self.sockdir = sockdir
        self.servers: list[FakeQMPServer] = []

    async def add(self, mode: str) -> FakeQMPServer:
        server = FakeQMPServer(os.path.join(self.sockdir, f"m{len(self.servers)}.sock"), mode=mode)
        await server.start()
        self.servers.append(server)
        return server

    @property
    def paths(self) -> list[str]:
        return [server.path for server in self.servers]

    def open_connections(self) -> int:
        return sum(server.clients for server in self.servers)


@pytest.fixture
async def monitors(sockdir: str) -> AsyncIterator[Monitors]:
    made = Monitors(sockdir)
    try:
        yield made
    finally:
        for server in made.servers:
            await server.close()


async def test_the_free_monitor_wins_without_waiting_on_busy_ones(monitors: Monitors) -> None:
    """'silent' monitors accept and never greet, like ones serving another client: with
    the attempts given a minute, only not waiting on them finishes in time."""
    busy = [await monitors.add("silent"), await monitors.add("silent")]
    free = await monitors.add("qmp")
    async with asyncio.timeout(PROMPTLY):
        client = await connect_first(monitors.paths, timeout=LONG_TIMEOUT)
        try:
            assert client.connected
            assert [command for command, _ in free.received] == ["qmp_capabilities"]
            assert all(server.connections == 1 for server in busy)
            await wait_until(lambda: monitors.open_connections() == 1)
            assert free.clients == 1
        finally:
            await client.aclose()


async def test_a_monitor_that_greets_late_is_still_taken(monitors: Monitors, sockdir: str) -> None:
    """A slow QEMU (or a busy monitor whose client leaves) greets long after the connect:
    no short greeting timeout gives up on it."""
    greet = asyncio.Event()
    backend = FakeQMPServer(os.path.join(sockdir, "unused.sock"))

    async def late(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await greet.wait()
        await backend._serve(reader, writer)

    late_server = await asyncio.start_unix_server(late, path=os.path.join(sockdir, "late.sock"))
    await monitors.add("silent")
    try:
        paths = [*monitors.paths, os.path.join(sockdir, "late.sock")]
        connecting = asyncio.create_task(connect_first(paths, timeout=LONG_TIMEOUT))
        await asyncio.sleep(1.0)  # twice what the old busy-monitor timeout allowed
        assert not connecting.done()
        greet.set()
        async with asyncio.timeout(PROMPTLY):
            client = await connecting
        assert client.connected and backend.connections == 1
        await client.aclose()
    finally:
        late_server.close()
        await backend.close()


async def test_when_several_monitors_greet_one_connection_stays(monitors: Monitors) -> None:
    for _ in range(3):
        await monitors.add("qmp")
    client = await connect_first(monitors.paths)
    try:
        async with asyncio.timeout(PROMPTLY):
            await wait_until(lambda: monitors.open_connections() == 1)
        assert client.connected
    finally:
        await client.aclose()


async def test_every_monitor_busy_is_a_timeout_and_leaves_nothing_open(
    monitors: Monitors,
) -> None:
    for _ in range(3):
        await monitors.add("silent")
    with pytest.raises(QMPTimeoutError, match=r"no QMP greeting within 0\.2s"):
        await connect_first(monitors.paths, timeout=0.2)
    async with asyncio.timeout(PROMPTLY):
        await wait_until(lambda: monitors.open_connections() == 0)


async def test_a_refused_monitor_does_not_hide_a_free_one(monitors: Monitors, sockdir: str) -> None:
    free = await monitors.add("qmp")
    client = await connect_first([os.path.join(sockdir, "absent.sock"), free.path])
    assert client.connected
    await client.aclose()


async def test_a_failure_wins_over_timeouts_and_names_its_socket(
    monitors: Monitors, sockdir: str
) -> None:
    await monitors.add("silent")
    absent = os.path.join(sockdir, "absent.sock")
    with pytest.raises(QMPConnectionError, match=f"QMP socket {absent}: No such file"):
        await connect_first([*monitors.paths, absent], timeout=0.2)


async def test_cancelling_closes_every_attempt(monitors: Monitors) -> None:
    for _ in range(3):
        await monitors.add("silent")
    connecting = asyncio.create_task(connect_first(monitors.paths, timeout=LONG_TIMEOUT))
    async with asyncio.timeout(PROMPTLY):
        await wait_until(lambda: monitors.open_connections() == 3)
        connecting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await connecting
        await wait_until(lambda: monitors.open_connections() == 0)


async def test_no_address_is_refused() -> None:
    with pytest.raises(ValueError, match="no monitor address given"):
        await connect_first([])


async def test_an_attempt_that_cannot_be_made_leaves_the_others_closed(
    monitors: Monitors, monkeypatch: pytest.MonkeyPatch
) -> None:
    for _ in range(3):
        await monitors.add("silent")
    made = 0
    real = first._Attempt

    def attempt(loop: asyncio.AbstractEventLoop, path: str) -> first._Attempt:
        nonlocal made
        made += 1
        if made == 3:
            raise OSError(errno.EMFILE, "Too many open files")
        return real(loop, path)

    monkeypatch.setattr(first, "_Attempt", attempt)
    selector = asyncio.get_running_loop()._selector  # type: ignore[attr-defined]
    watched = len(selector.get_map())
    with pytest.raises(OSError, match="Too many open files"):
        await connect_first(monitors.paths, timeout=LONG_TIMEOUT)
    assert len(selector.get_map()) == watched  # no reader left behind
    async with asyncio.timeout(PROMPTLY):
        await wait_until(lambda: monitors.open_connections() == 0)
