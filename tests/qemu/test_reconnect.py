"""Connecting to a running domain: QEMU is asked first and the books read while it answers;
a connect that fails on the books closes the monitor connection it had made meanwhile."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import cast

import pytest
from support import USER_NIC, open_fd_count, start_fake

from qctl import Domain, StateError
from qctl.qemu import reconnect, startup
from qctl.qemu.state import DomainDir
from qctl.qemu.status import StoredStatus, read_stored_status
from qctl.qmp import QMPClient


async def test_the_books_are_read_while_qemu_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    owner = await start_fake(tmp_path, "early")
    order: list[str] = []
    real_connect = startup.connect_free_monitor

    async def connect(directory: DomainDir) -> QMPClient:
        order.append("connect")
        return await real_connect(directory)

    def read(directory: DomainDir) -> StoredStatus:
        order.append("read")
        return read_stored_status(directory)

    monkeypatch.setattr(reconnect, "connect_free_monitor", connect)
    monkeypatch.setattr(reconnect, "read_stored_status", read)
    try:
        async with Domain.connect(owner.name, state_root=tmp_path) as other:
            assert other.running
        assert order == ["connect", "read"]
    finally:
        await owner.stop(force=True)


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
