"""Connecting to a running domain: QEMU is asked first and the books read while it answers;
a connect that fails on the books closes the monitor connection it had made meanwhile."""

from __future__ import annotations

import asyncio
import json
import os
import socket
from pathlib import Path
from typing import Any, cast

import pytest
from fakeqemu import FakeLauncher
from support import USER_NIC, open_fd_count, start_fake

from qctl import DetachResult, Domain, StateError
from qctl.qemu import reconnect, startup
from qctl.qemu.state import DomainDir, FileLock, StateRoot
from qctl.qemu.status import StoredStatus, read_stored_status
from qctl.qemu.txn import take_lock
from qctl.qmp import QMPClient


async def test_the_books_are_read_while_qemu_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    owner = await start_fake(tmp_path, "early")
    order: list[str] = []
    real_connect = startup.connect_free_monitor

    async def connect(directory: DomainDir, *, sent: asyncio.Future[None] | None) -> QMPClient:
        order.append("connect")
        client = await real_connect(directory, sent=sent)
        order.append("answered")
        return client

    def read(directory: DomainDir) -> StoredStatus:
        order.append("read")
        return read_stored_status(directory)

    monkeypatch.setattr(reconnect, "connect_free_monitor", connect)
    monkeypatch.setattr(reconnect, "read_stored_status", read)
    try:
        async with Domain.connect(owner.name, state_root=tmp_path) as other:
            assert other.running
        assert order == ["connect", "read", "answered"]  # read once QEMU was asked
    finally:
        await owner.stop(force=True)


async def test_a_connect_to_a_qemu_gone_fails_without_waiting_for_a_handshake(
    tmp_path: Path,
) -> None:
    launcher = FakeLauncher()
    owner = await start_fake(tmp_path, "gone", launcher=launcher)
    await owner.aclose()
    launcher.qemu.exit()  # its monitors refuse: no handshake is ever sent
    async with asyncio.timeout(10):
        with pytest.raises(StateError, match="not running"):
            await Domain.connect(owner.name, state_root=tmp_path, launcher=launcher)
    assert not owner.directory.path.exists()  # its books were released


async def test_damaged_books_fail_at_once_when_no_monitor_greets(tmp_path: Path) -> None:
    directory = StateRoot(tmp_path).domain("hung")
    directory.make()
    listeners = []
    for path in directory.qmp_sockets:  # a QEMU hung (or every monitor busy): never greets
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(path))
        listener.listen(4)
        listeners.append(listener)
    directory.status_file.write_bytes(b"{not json")
    try:
        async with asyncio.timeout(2):  # not the 10 s the greeting could take
            with pytest.raises(StateError, match="unreadable"):
                await Domain.connect("hung", state_root=tmp_path)
    finally:
        for listener in listeners:
            listener.close()


async def test_damaged_books_fail_the_connect_and_close_its_monitor(tmp_path: Path) -> None:
    owner = await start_fake(tmp_path, "damaged")
    try:
        await owner.attach_device(USER_NIC)
        async with Domain.connect(owner.name, state_root=tmp_path):
            pass  # warmed up: whatever a connect opens once per process is open now
        fds = open_fd_count()
        good = owner.directory.status_file.read_bytes()
        owner.directory.status_file.write_bytes(b"{not json")
        for _ in range(3):  # each would take a monitor for good if it were left open
            with pytest.raises(StateError, match="unreadable"):
                await Domain.connect(owner.name, state_root=tmp_path)
        await asyncio.sleep(0.2)  # the fake QEMU (in this process) sees each one close
        assert open_fd_count() == fds
        owner.directory.status_file.write_bytes(good)
        async with Domain.connect(owner.name, state_root=tmp_path) as other:
            assert other.running  # a monitor was free again
    finally:
        await owner.stop(force=True)


async def test_a_connect_done_before_it_is_abandoned_is_closed_and_a_failed_one_is_no_news() -> (
    None
):
    closed: list[bool] = []

    class Client:
        async def aclose(self) -> None:
            closed.append(True)

    async def connected() -> QMPClient:
        return cast(QMPClient, Client())

    async def refused() -> QMPClient:
        raise StateError("cannot reach the monitor")

    for made in (connected, refused):
        task = asyncio.create_task(made())
        await asyncio.sleep(0)  # done already
        await reconnect._abandon(task)  # raises nothing
    assert closed == [True]


async def test_a_connect_cancelled_at_any_point_leaves_no_monitor_held(tmp_path: Path) -> None:
    owner = await start_fake(tmp_path, "cancelled")
    try:
        async with Domain.connect(owner.name, state_root=tmp_path):
            pass  # warmed up
        await asyncio.sleep(0.2)
        fds = open_fd_count()
        for turns in range(12):  # cancelled after 0, 1, … turns of the loop
            opening = asyncio.ensure_future(Domain.connect(owner.name, state_root=tmp_path))
            for _ in range(turns):
                await asyncio.sleep(0)
            opening.cancel()
            try:
                handle = await opening
            except asyncio.CancelledError:
                continue
            await handle.aclose()  # it had finished already
        await asyncio.sleep(0.2)  # the fake QEMU (in this process) sees each one close
        assert open_fd_count() == fds
        async with Domain.connect(owner.name, state_root=tmp_path) as other:
            assert other.running
    finally:
        await owner.stop(force=True)


async def test_nothing_in_an_untrusted_state_directory_is_connected_to(tmp_path: Path) -> None:
    directory = tmp_path / "root" / "domains" / "vm1"
    directory.mkdir(parents=True)
    os.chmod(tmp_path / "root", 0o777)  # others may write it: refused
    accepted: list[bool] = []

    async def note(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(True)
        writer.close()

    server = await asyncio.start_unix_server(note, path=str(directory / "qmp.sock"))
    try:
        with pytest.raises(StateError, match="refusing state directory"):
            await Domain.connect("vm1", state_root=tmp_path / "root")
        await asyncio.sleep(0.05)
        assert not accepted
    finally:
        server.close()


async def test_a_detach_the_guest_finishes_while_connect_asks_again_is_finished(
    tmp_path: Path,
) -> None:
    """Connect asks QEMU again to unplug a ``detaching`` device it still lists; the guest
    lets go in between, so QEMU says the device is not found: the detach is finished (its
    netdev and books), never put back as attached (found by ``scripts/faults --seed 53``:
    "net0 in the ledger, not in QEMU")."""
    launcher = FakeLauncher()
    owner = await start_fake(tmp_path, "late", launcher=launcher)
    qemu = launcher.qemu
    try:
        await owner.attach_device(USER_NIC)
        [entry] = list(owner.ledger)
        qemu.guest_unplugs = False
        assert await owner.detach_device(entry.alias, wait=0) is DetachResult.PENDING
        assert entry.netdev_id in qemu.netdevs
        do = qemu._do

        def guest_let_go_first(command: str, args: dict[str, Any]) -> dict[str, Any]:
            if command == "device_del":
                qemu.unplug_now(args["id"])
            return do(command, args)

        qemu._do = guest_let_go_first  # type: ignore[method-assign]
        async with Domain.connect(owner.name, state_root=tmp_path, launcher=launcher) as dom:
            assert list(dom.ledger) == []
            assert entry.alias not in dom.xml()
        assert ("device_del", {"id": entry.alias}) in qemu.log[-4:]
        assert entry.netdev_id not in qemu.netdevs
    finally:
        await owner.stop(force=True)


async def test_a_dead_qemus_books_damaged_meanwhile_are_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Read whole by the connect, then unreadable once it holds the lock: what they hold
    cannot be released, so they stay (for ``stop --force``), and the error says why."""
    launcher = FakeLauncher()
    owner = await start_fake(tmp_path, "dead", launcher=launcher)
    await owner.aclose()
    launcher.qemu.exit()

    reads: list[str] = []

    def damaged_after_the_first(directory: DomainDir) -> StoredStatus:
        reads.append(directory.name)
        if len(reads) > 1:
            raise StateError(f"status file {directory.status_file} is damaged")
        return read_stored_status(directory)

    monkeypatch.setattr(reconnect, "read_stored_status", damaged_after_the_first)
    with pytest.raises(StateError, match="cannot be read, so nothing it held was released"):
        await Domain.connect(owner.name, state_root=tmp_path, launcher=launcher)
    assert owner.directory.status_file.exists()
    owner.directory.remove()  # (the fake's "process" is this one: it lives)


async def test_a_runtime_whose_qemu_exits_after_the_name_was_started_anew_releases_nothing(
    tmp_path: Path,
) -> None:
    """Another process released and removed this handle's domain, and a new start of the
    name wrote its own books: the old handle, seeing its QEMU exit, leaves them alone."""
    launcher = FakeLauncher()
    owner = await start_fake(tmp_path, "anew", launcher=launcher)
    directory = owner.directory
    data = json.loads(directory.status_file.read_bytes())
    data["pid"] = os.getppid()  # another QEMU: the new start's
    directory.write_status(data)
    launcher.qemu.exit()
    async with asyncio.timeout(10):
        await owner.wait_exit()
    assert json.loads(directory.status_file.read_bytes())["pid"] == os.getppid()
    directory.remove()


async def test_a_dead_qemus_name_started_anew_before_the_lock_keeps_the_new_books(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between the connect's read and its lock, another process released the dead QEMU's
    books and a new start of the name wrote its own: they are not released."""
    launcher = FakeLauncher()
    owner = await start_fake(tmp_path, "anew", launcher=launcher)
    await owner.aclose()
    launcher.qemu.exit()
    directory = owner.directory
    async def started_anew_first(locked: DomainDir) -> FileLock:
        data = json.loads(directory.status_file.read_bytes())
        data["pid"] = os.getppid()  # the new start's QEMU
        directory.write_status(data)
        return await take_lock(locked)

    monkeypatch.setattr(reconnect, "take_lock", started_anew_first)
    with pytest.raises(StateError, match="started again meanwhile"):
        await Domain.connect(owner.name, state_root=tmp_path, launcher=launcher)
    assert json.loads(directory.status_file.read_bytes())["pid"] == os.getppid()
    directory.remove()


async def test_a_runtime_whose_books_another_process_damaged_keeps_them_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    launcher = FakeLauncher()
    owner = await start_fake(tmp_path, "torn", launcher=launcher)
    directory = owner.directory
    directory.status_file.write_bytes(b"{not json")
    launcher.qemu.exit()
    async with asyncio.timeout(10):
        await owner.wait_exit()
    assert "its books cannot be read" in caplog.text
    assert directory.status_file.read_bytes() == b"{not json"
    directory.remove()
