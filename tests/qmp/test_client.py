"""QMPClient against the fake QMP server: connecting, commands, errors, timeouts, closing."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import socket
from typing import Any

import pytest
from fakeqmp import FakeQMPServer

from qctl.errors import (
    QMPCommandError,
    QMPConnectionError,
    QMPProtocolError,
    QMPTimeoutError,
)
from qctl.qmp import QMPClient, connect_qmp
from qctl.qmp import client as client_module
from qctl.qmp.client import _compact, _Wire


async def never_answer(arguments: dict[str, Any]) -> None:
    return None


async def test_connect_negotiates_and_keeps_the_greeting(server: FakeQMPServer) -> None:
    async with connect_qmp(server.path) as client:
        assert client.connected
        assert client.greeting["QMP"]["version"]["qemu"]["major"] == 7
        assert client.greeting["QMP"]["capabilities"] == ["oob"]
    assert server.received[0] == ("qmp_capabilities", {})  # offered, not enabled: never used
    assert not client.connected


async def test_connect_qmp_can_be_awaited_and_aclose_is_idempotent(
    server: FakeQMPServer,
) -> None:
    client = await connect_qmp(server.path)
    assert await client.execute("echo", {"a": 1}) == {"a": 1}
    await client.aclose()
    await client.aclose()
    assert not client.connected


async def test_execute_sends_arguments_and_returns_the_reply(server: FakeQMPServer) -> None:
    async with connect_qmp(server.path) as client:
        assert await client.execute("echo", {"id": "net0", "n": [1, 2]}) == {
            "id": "net0",
            "n": [1, 2],
        }
        assert await client.execute("echo") == {}
    assert ("echo", {"id": "net0", "n": [1, 2]}) in server.received


async def test_command_error_keeps_qemu_error_class_and_text(server: FakeQMPServer) -> None:
    async with connect_qmp(server.path) as client:
        with pytest.raises(QMPCommandError) as info:
            await client.execute("device_del", {"id": "nope"})
    error = info.value
    assert (error.command, error.error_class) == ("device_del", "CommandNotFound")
    assert error.desc == "The command device_del has not been found"
    assert str(error) == "device_del: CommandNotFound: The command device_del has not been found"


async def test_timeout_is_typed_and_the_client_stays_usable(server: FakeQMPServer) -> None:
    server.handlers["hang"] = never_answer
    async with connect_qmp(server.path) as client:
        with pytest.raises(QMPTimeoutError, match=r"hang: no reply from QEMU within 0\.05s"):
            await client.execute("hang", timeout=0.05)
        assert await client.execute("echo", {"still": "here"}) == {"still": "here"}


async def test_concurrent_commands_each_get_their_own_reply(server: FakeQMPServer) -> None:
    async def slow_echo(arguments: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(0.001 * (20 - arguments["n"]))  # answer in reverse order
        return {"return": arguments}

    server.handlers["slow-echo"] = slow_echo
    async with connect_qmp(server.path) as client:
        replies = await asyncio.gather(*(client.execute("slow-echo", {"n": n}) for n in range(20)))
    assert replies == [{"n": n} for n in range(20)]


async def test_missing_socket_is_a_connection_error(sockdir: str) -> None:
    with pytest.raises(QMPConnectionError, match="No such file or directory"):
        await connect_qmp(os.path.join(sockdir, "absent.sock"))


@pytest.mark.parametrize(
    ("mode", "error", "message"),
    [
        ("garbage", QMPProtocolError, "does not speak QMP"),
        ("hangup", QMPConnectionError, "closed before the QMP handshake"),
        ("silent", QMPTimeoutError, "no QMP greeting within 0.2s"),
    ],
)
async def test_peer_that_is_not_a_qmp_server(
    sockdir: str, mode: str, error: type[Exception], message: str
) -> None:
    async with FakeQMPServer(os.path.join(sockdir, "bad.sock"), mode=mode) as bad:
        with pytest.raises(error, match=message):
            await connect_qmp(bad.path, timeout=0.2)


async def test_failed_connect_logs_nothing_above_debug(
    sockdir: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with FakeQMPServer(os.path.join(sockdir, "bad.sock"), mode="garbage") as bad:
        with pytest.raises(QMPProtocolError):
            await connect_qmp(bad.path)
    assert any(r.name.startswith("qctl.qmp.wire") for r in caplog.records)
    assert [r.getMessage() for r in caplog.records if r.levelno > logging.DEBUG] == []


async def test_connection_lost_before_the_reply(server: FakeQMPServer) -> None:
    async def crash(arguments: dict[str, Any]) -> None:
        await server.drop_connections()

    server.handlers["crash"] = crash
    async with connect_qmp(server.path) as client:
        with pytest.raises(QMPConnectionError, match=r"crash: .*closed the connection"):
            await client.execute("crash")
        assert not client.connected
        with pytest.raises(QMPConnectionError, match="closed"):
            await client.execute("echo")


@pytest.mark.parametrize(
    "reply",
    [{"neither": "return nor error"}, {"error": "no class, no desc"}],
    ids=["neither", "error-without-class"],
)
async def test_malformed_reply_is_a_protocol_error(
    server: FakeQMPServer, reply: dict[str, Any]
) -> None:
    async def nonsense(arguments: dict[str, Any]) -> dict[str, Any]:
        return reply

    server.handlers["nonsense"] = nonsense
    async with connect_qmp(server.path) as client:
        with pytest.raises(QMPProtocolError, match="nonsense: malformed reply"):
            await client.execute("nonsense")


async def test_arguments_that_are_not_json_fail_the_call_not_the_connection(
    server: FakeQMPServer,
) -> None:
    async with connect_qmp(server.path) as client:
        with pytest.raises(TypeError):
            await client.execute("echo", {"x": object()})
        assert client.connected
        assert await client.execute("echo", {"x": 2}) == {"x": 2}
        assert [command for command, _ in server.received].count("echo") == 1


async def test_quit_closes_cleanly(server: FakeQMPServer) -> None:
    async with connect_qmp(server.path) as client:
        await client.quit()
        assert not client.connected
        assert server.quit_requested.is_set()
        with pytest.raises(QMPConnectionError):
            await client.execute("echo")


async def test_quit_when_qemu_exits_before_replying(server: FakeQMPServer) -> None:
    async def exit_at_once(arguments: dict[str, Any]) -> None:
        await server.drop_connections()

    server.handlers["quit"] = exit_at_once
    async with connect_qmp(server.path) as client:
        await client.quit()
        assert not client.connected


async def test_quit_on_a_closed_client_is_an_error(server: FakeQMPServer) -> None:
    client = await connect_qmp(server.path)
    await client.aclose()
    with pytest.raises(QMPConnectionError):
        await client.quit()


async def test_an_already_connected_socket_is_owned_by_the_client(
    server: FakeQMPServer,
) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(server.path)
    async with connect_qmp(sock) as client:
        assert await client.execute("echo", {"x": 1}) == {"x": 1}
    assert sock.fileno() == -1


async def test_socket_of_a_failed_connect_is_closed(sockdir: str) -> None:
    async with FakeQMPServer(os.path.join(sockdir, "bad.sock"), mode="garbage") as bad:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(bad.path)
        with pytest.raises(QMPProtocolError):
            await connect_qmp(sock)
    assert sock.fileno() == -1


async def test_cancelled_execute_raises_cancelled_error_and_its_late_reply_is_dropped(
    server: FakeQMPServer,
) -> None:
    arrived, release = asyncio.Event(), asyncio.Event()

    async def slow(arguments: dict[str, Any]) -> dict[str, Any]:
        arrived.set()
        await release.wait()
        return {"return": "late"}

    server.handlers["slow"] = slow
    async with connect_qmp(server.path) as client:
        task = asyncio.create_task(client.execute("slow", timeout=None))
        await arrived.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        release.set()
        await asyncio.sleep(0.05)  # the late reply comes back, and reaches nobody
        assert await client.execute("echo", {"ok": True}) == {"ok": True}
        assert client.connected


async def test_a_client_connects_only_once(server: FakeQMPServer) -> None:
    async with connect_qmp(server.path) as client:
        with pytest.raises(QMPConnectionError, match="connects once"):
            await client.connect(server.path)


async def test_unconnected_client_refuses_commands() -> None:
    client = QMPClient(name="idle")
    with pytest.raises(QMPConnectionError, match="not connected"):
        await client.execute("query-status")
    await client.aclose()


# -- a command asked with the handshake -------------------------------------------------------
PAUSED = {"status": "paused", "running": False}


def answer_in_order(
    server: FakeQMPServer, *, event_first: str | None = None, event_early: str | None = None
) -> None:
    """``qmp_capabilities`` is answered only once ``query-status`` has arrived (so a client
    that waits for the first reply before sending the second never connects), and
    ``query-status`` after it, as QEMU would; ``event_first`` is sent just before that,
    ``event_early`` before the reply to ``qmp_capabilities``."""
    asked, negotiated = asyncio.Event(), asyncio.Event()

    async def capabilities(arguments: dict[str, Any]) -> dict[str, Any]:
        await asyncio.wait_for(asked.wait(), 2)
        if event_early is not None:
            await server.emit(event_early)
        negotiated.set()
        return {"return": {}}

    async def status(arguments: dict[str, Any]) -> dict[str, Any]:
        asked.set()
        await negotiated.wait()
        if event_first is not None:
            await server.emit(event_first)
        return {"return": PAUSED}

    server.handlers["qmp_capabilities"] = capabilities
    server.handlers["query-status"] = status


async def test_an_asked_command_travels_with_the_negotiation(server: FakeQMPServer) -> None:
    answer_in_order(server)
    async with connect_qmp(server.path, ask="query-status", timeout=5) as client:
        assert client.take_answer("query-name") is None  # not what was asked: kept
        assert client.take_answer("query-status") == PAUSED
        assert client.take_answer("query-status") is None  # given once
        assert await client.execute("query-status") == PAUSED
    assert [command for command, _ in server.received] == [
        "qmp_capabilities", "query-status", "query-status"
    ]  # fmt: skip


async def test_sent_is_set_once_the_asked_command_is_on_its_way(server: FakeQMPServer) -> None:
    release = asyncio.Event()

    async def held(arguments: dict[str, Any]) -> dict[str, Any]:
        await release.wait()
        return {"return": {"status": "running"}}

    server.handlers["query-status"] = held
    sent: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    client = QMPClient()
    connecting = asyncio.create_task(client.connect(server.path, ask="query-status", sent=sent))
    async with asyncio.timeout(5):
        await sent
    assert not connecting.done()  # the answer is still to come: the caller works meanwhile
    release.set()
    await connecting
    assert client.take_answer("query-status") == {"status": "running"}
    await client.aclose()


async def test_a_reply_owed_to_an_earlier_client_is_not_taken_for_ours(
    server: FakeQMPServer,
) -> None:
    answer_in_order(server)
    # what QEMU sends after the greeting when the monitor's last client left mid-command:
    # that command's reply, with that client's id
    server.after_greeting = [{"return": {}, "id": "__qmp#00000"}, {"return": {}}]
    async with connect_qmp(server.path, ask="query-status") as client:
        assert client.take_answer("query-status") == PAUSED
        assert await client.execute("echo", {"mine": 1}) == {"mine": 1}
    async with connect_qmp(server.path) as client:
        assert await client.execute("echo", {"mine": 2}) == {"mine": 2}


@pytest.mark.parametrize("ask", [None, "query-status"])
async def test_replies_owed_to_an_earlier_client_before_the_greeting_are_dropped(
    server: FakeQMPServer, ask: str | None
) -> None:
    if ask:
        answer_in_order(server)
    # seen with QEMU 7.2: the previous client's reply came just before this one's greeting
    server.before_greeting = [{"return": {}}, {"return": [], "id": "__qmp#00001"}]
    server.before_greeting.append({"error": {"class": "GenericError", "desc": "late"}})
    async with connect_qmp(server.path, ask=ask) as client:
        assert client.greeting["QMP"]["capabilities"] == ["oob"]
        if ask:
            assert client.take_answer(ask) == PAUSED
        assert await client.execute("echo", {"mine": 1}) == {"mine": 1}


async def test_a_peer_that_never_greets_is_refused_after_the_replies_qemu_could_owe(
    server: FakeQMPServer,
) -> None:
    server.before_greeting = [{"return": {}}] * 9  # more than QEMU queues for a client
    with pytest.raises(QMPProtocolError, match="Greeting"):
        async with connect_qmp(server.path, timeout=5):
            pass


async def test_a_negotiation_the_last_client_left_under_way_is_taken_as_done(
    server: FakeQMPServer,
) -> None:
    async def already(arguments: dict[str, Any]) -> dict[str, Any]:
        desc = "Capabilities negotiation is already complete, command ignored"
        return {"error": {"class": "CommandNotFound", "desc": desc}}

    async def status(arguments: dict[str, Any]) -> dict[str, Any]:
        return {"return": PAUSED}

    # the previous client's qmp_capabilities ran after this client's greeting
    server.after_greeting = [{"return": {}, "id": "1.7-n"}]  # an earlier session's
    server.handlers["qmp_capabilities"] = already
    server.handlers["query-status"] = status
    async with connect_qmp(server.path, ask="query-status") as client:
        assert client.take_answer("query-status") == PAUSED
        assert await client.execute("echo", {"mine": 1}) == {"mine": 1}


async def test_an_event_after_the_answer_makes_it_stale(server: FakeQMPServer) -> None:
    answer_in_order(server)
    async with connect_qmp(server.path, ask="query-status", timeout=5) as client:
        with client.events("STOP") as stops:
            await server.emit("STOP")
            await stops.get()
        assert client.take_answer("query-status") is None


@pytest.mark.parametrize("when", ["before the answer", "before the negotiation reply"])
async def test_events_during_the_handshake_are_delivered_and_the_answer_kept(
    server: FakeQMPServer, when: str
) -> None:
    if when == "before the answer":
        answer_in_order(server, event_first="RESUME")
    else:  # QEMU may send one as soon as it is in command mode
        answer_in_order(server, event_early="RESUME")
    client = QMPClient()
    with client.events() as seen:  # subscribed before connecting
        await client.connect(server.path, ask="query-status", timeout=5)
        assert (await seen.get()).name == "RESUME"
        assert client.take_answer("query-status") == PAUSED
    await client.aclose()


async def test_a_refused_ask_leaves_no_answer_and_the_client_usable(
    server: FakeQMPServer,
) -> None:
    async with connect_qmp(server.path, ask="query-nothing", timeout=5) as client:
        assert client.take_answer("query-nothing") is None
        with pytest.raises(QMPCommandError, match="CommandNotFound"):
            await client.execute("query-nothing")
        assert await client.execute("echo", {"ok": 1}) == {"ok": 1}


async def test_a_refused_negotiation_with_an_ask_is_a_protocol_error(
    server: FakeQMPServer,
) -> None:
    async def refuse(arguments: dict[str, Any]) -> dict[str, Any]:
        return {"error": {"class": "GenericError", "desc": "no"}}

    async def not_yet(arguments: dict[str, Any]) -> dict[str, Any]:  # as QEMU, then
        desc = "Expecting capabilities negotiation with 'qmp_capabilities'"
        return {"error": {"class": "CommandNotFound", "desc": desc}}

    server.handlers["qmp_capabilities"] = refuse
    server.handlers["query-status"] = not_yet
    with pytest.raises(QMPProtocolError, match="qmp_capabilities refused"):
        await connect_qmp(server.path, ask="query-status", timeout=5)


async def test_a_command_sent_since_makes_the_answer_stale(server: FakeQMPServer) -> None:
    answer_in_order(server)
    async with connect_qmp(server.path, ask="query-status", timeout=5) as client:
        await client.execute("echo", {"x": 1})
        assert client.take_answer("query-status") is None


async def test_no_answer_once_the_connection_has_ended(server: FakeQMPServer) -> None:
    answer_in_order(server)
    client = await connect_qmp(server.path, ask="query-status", timeout=5)
    await client.aclose()
    assert client.take_answer("query-status") is None


def test_command_ids_are_short_and_unique_to_the_process_and_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """QEMU reads a command a byte at a time (each byte costs it a turn of its main loop):
    ids stay short, yet a reply owed to an earlier client of the monitor, in this process
    or another, never passes for one of ours. Pids 1 and 63 ("1" and "11" in base 62),
    with 64 connections and 63 commands each, would give the same ids were any part or
    separator left out."""
    ids: list[str] = []
    handshakes: list[str] = []
    for pid, connections in ((1, 64), (63, 2), (62, 2), (4194304, 2)):
        monkeypatch.setattr(os, "getpid", lambda pid=pid: pid)
        monkeypatch.setattr(client_module, "_sessions", itertools.count())  # a new process
        for _ in range(connections):
            wire = _Wire("ids", lambda event: None)
            ids += [wire._get_exec_id() for _ in range(63)]
            handshakes += wire.handshake_ids
    assert len(set(ids)) == len(ids)
    assert not set(ids) & set(handshakes)
    assert max(len(i) for i in ids) <= 9  # "hB84.1.10", not "qctl-4194304-1-62"
    assert len({_compact(n) for n in range(200_000)}) == 200_000


def test_the_handshake_ids_of_processes_that_share_a_pid_differ(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A container's qctl is often pid 1, session 0, every time: a reply owed to the last
    one's handshake must not pass for this one's."""
    seen: set[str] = set()
    for _ in range(50):
        monkeypatch.setattr(os, "getpid", lambda: 1)
        monkeypatch.setattr(client_module, "_sessions", itertools.count())
        seen.update(_Wire("again", lambda event: None).handshake_ids)
    assert len(seen) == 100
