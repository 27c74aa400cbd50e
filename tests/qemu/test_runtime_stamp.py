"""The stamp a handle keeps of the status file is never newer than its books (a start takes
it under the start's lock, a connect before reading), so a write another process makes
while a handle is being made is read before the handle's first job."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fakeqemu import FakeLauncher
from support import FAKE_DOMAIN, USER_NIC, recorded_caps, start_fake, unique

from qctl import Domain, parse_domain
from qctl.qemu import domain, reconnect
from qctl.qemu.runtime import DomainRuntime
from qctl.qemu.startup import Launched
from qctl.qemu.state import DomainDir, atomic_write
from qctl.qemu.status import StoredStatus, read_stored_status

CAPS = recorded_caps()


def forget_devices(directory: DomainDir) -> None:
    """What another process's job might write: a ledger without the devices."""
    data = directory.read_status()
    data["ledger"] = []
    del data["journal"]  # a whole file of another generation: the journal no longer counts
    atomic_write(directory.status_file, json.dumps(data).encode())


async def test_a_write_made_while_connecting_is_read_at_the_next_refresh(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = tmp_path / "state"
    owner = await start_fake(state, "conn")
    try:
        await owner.attach_device(USER_NIC)

        def raced(directory: DomainDir) -> StoredStatus:
            stored = read_stored_status(directory)
            forget_devices(directory)  # another process's job lands right after the read
            return stored

        monkeypatch.setattr(reconnect, "read_stored_status", raced)
        async with Domain.connect(owner.name, state_root=state) as other:
            monkeypatch.undo()
            other.runtime.refresh()  # what a job does first (connect's reconciling too)
            assert len(other.ledger) == 0  # the write it had not seen
    finally:
        await owner.stop(force=True)


async def test_a_write_made_right_after_a_start_is_read_at_the_next_refresh(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = domain._runtime

    def raced(started: Launched, *args: Any) -> DomainRuntime:
        forget_devices(started.directory)  # another process's job, once the lock is free
        return real(started, *args)

    monkeypatch.setattr(domain, "_runtime", raced)
    nic = parse_domain(FAKE_DOMAIN.format(name=unique("start")).replace(
        "</devices>", "<interface type='user'><model type='virtio'/></interface></devices>"
    ))  # fmt: skip
    dom = await Domain.start(nic, caps=CAPS, state_root=tmp_path, launcher=FakeLauncher())
    try:
        dom.runtime.refresh()
        assert len(dom.ledger) == 0
    finally:
        await dom.stop(force=True)
