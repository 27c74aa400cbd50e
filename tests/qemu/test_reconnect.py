"""open_runtime (Domain.connect): the books a new handle starts from are never taken for
newer than they are, so a write another process makes while it connects is read before
the handle's first job."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fakeqemu import FakeLauncher
from support import unique

from qctl import Domain, QEMUCaps, parse_domain
from qctl.qemu import reconnect
from qctl.qemu.state import DomainDir, atomic_write
from qctl.qemu.status import StoredStatus, read_stored_status

DATA = Path(__file__).parent / "data"
CAPS = QEMUCaps.from_json((DATA / "argv" / "qemu-7.2.caps.json").read_text())
DOMAIN = """<domain type='qemu'><name>{name}</name><memory unit='MiB'>64</memory>
  <os><type arch='x86_64' machine='q35'>hvm</type></os>
  <devices><controller type='pci' index='1' model='pcie-root-port'/></devices></domain>"""
USER_NIC = "<interface type='user'><model type='virtio'/></interface>"


async def test_a_write_made_while_connecting_is_read_at_the_next_refresh(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = tmp_path / "state"
    owner = await Domain.start(
        parse_domain(DOMAIN.format(name=unique("conn"))),
        caps=CAPS, state_root=state, launcher=FakeLauncher(),
    )  # fmt: skip
    try:
        await owner.attach_device(USER_NIC)

        def raced(directory: DomainDir) -> StoredStatus:
            stored = read_stored_status(directory)
            # another process's job lands right after the read: the device is gone
            data = json.loads(directory.status_file.read_bytes())
            data["ledger"] = []
            atomic_write(directory.status_file, json.dumps(data).encode())
            return stored

        monkeypatch.setattr(reconnect, "read_stored_status", raced)
        async with Domain.connect(owner.name, state_root=state) as other:
            monkeypatch.undo()
            other.runtime.refresh()  # what a job does first (connect's reconciling too)
            assert len(other.ledger) == 0  # the write it had not seen
    finally:
        await owner.stop(force=True)
