"""connect_free_monitor: the monitors of a domain are tried at once, so a monitor held by
another client costs no wait; all busy, or none reachable, is a StateError naming the domain."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from fakeqmp import FakeQMPServer

from qctl.errors import StateError
from qctl.qemu import startup
from qctl.qemu.state import DomainDir


class Monitors:
    """Stand-ins for a domain's monitors that log when connections open and close.

    A busy monitor accepts and never greets (QEMU serving another client); a free one
    speaks QMP (a :class:`FakeQMPServer` serves the connection).
    """

    def __init__(self, directory: DomainDir) -> None:
        self.directory = directory
        self.log: list[str] = []
        self.backend = FakeQMPServer(directory.path / "unused.sock")
        self.servers: list[asyncio.AbstractServer] = []

    async def serve(self, index: int, *, busy: bool) -> None:
        name = f"monitor {index}"

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.log.append(f"{name} connected")
            if busy:
                await reader.read()
                self.log.append(f"{name} closed")
                writer.close()
            else:
                await self.backend._serve(reader, writer)

        path = self.directory.qmp_sockets[index]
        self.servers.append(await asyncio.start_unix_server(handle, path=str(path)))

    async def aclose(self) -> None:
        for server in self.servers:
            server.close()
        await self.backend.close()


@pytest.fixture
async def monitors(sockdir: str) -> AsyncIterator[Monitors]:
    path = Path(sockdir) / "dom"
    path.mkdir()
    made = Monitors(DomainDir(path))
    try:
        yield made
    finally:
        await made.aclose()


async def test_busy_monitors_are_not_waited_on(monitors: Monitors) -> None:
    """Tried one after the other, each busy monitor would be given up (closed) before the
    free one is tried; tried at once, the free one is reached while they are still open."""
    await monitors.serve(0, busy=True)
    await monitors.serve(1, busy=True)
    await monitors.serve(2, busy=False)
    client = await startup.connect_free_monitor(monitors.directory)
    try:
        assert client.connected
        first_closed = min(
            (i for i, line in enumerate(monitors.log) if line.endswith("closed")),
            default=len(monitors.log),
        )
        assert set(monitors.log[:first_closed]) == {
            "monitor 0 connected",
            "monitor 1 connected",
            "monitor 2 connected",
        }
        # the run state is asked with the negotiation, for the reconciling after a connect
        assert [command for command, _ in monitors.backend.received] == [
            "qmp_capabilities", "query-status"
        ]  # fmt: skip
    finally:
        await client.aclose()


async def test_every_monitor_busy_is_a_state_error(
    monitors: Monitors, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(startup, "CONNECT_TIMEOUT", 0.2)
    for index in range(3):
        await monitors.serve(index, busy=True)
    with pytest.raises(
        StateError,
        match=r"all 3 monitors of 'dom' are in use by other qctl processes, or QEMU does not "
        r"answer: .*no QMP greeting within 0\.2s",
    ):
        await startup.connect_free_monitor(monitors.directory)


async def test_no_monitor_to_reach_is_a_state_error(monitors: Monitors) -> None:
    with pytest.raises(
        StateError, match=r"cannot reach the monitor of 'dom': QMP socket .*/dom/qmp.sock"
    ):
        await startup.connect_free_monitor(monitors.directory)
