"""The state root's index of host device claims: read instead of every domain's books."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import qctl.qemu.claims as claims
from qctl import PCIAddress
from qctl.qemu.ledger import DeviceKind, EntryState, Ledger, LedgerEntry
from qctl.qemu.process import ProcessIdentity
from qctl.qemu.state import StateRoot

VF = PCIAddress.parse("0000:3b:10.1")


def _domain(root: StateRoot, name: str, devices: dict[str, str]) -> None:
    """A status file whose ledger holds ``devices`` (alias → host address)."""
    ledger = Ledger()
    for alias, address in devices.items():
        ledger.put(
            LedgerEntry(alias, DeviceKind.HOSTDEV, EntryState.ATTACHED, host_device=address)
        )
    directory = root.domain(name)
    directory.path.mkdir(parents=True)
    identity = ProcessIdentity(1, 1)
    directory.status_file.write_text(
        json.dumps(
            {
                "version": 1,
                "pid": identity.pid,
                "start_time": identity.start_time,
                "ledger": ledger.to_json(),
                "state": "running",
                "job": None,
            }
        )
    )


def test_claims_come_from_the_index_and_the_ledgers_it_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = StateRoot(tmp_path)
    root.ensure()
    _domain(root, "a", {"hostdev0": str(VF)})
    for n in range(20):
        _domain(root, f"idle{n}", {})
    assert claims.devices_held(root) == {VF: "a/hostdev0"}  # no index yet: rebuilt once
    assert json.loads((tmp_path / "devices.json").read_text()) == {str(VF): "a/hostdev0"}

    read: list[str] = []
    real = claims.read_summary

    def counting(directory):  # type: ignore[no-untyped-def]
        read.append(directory.name)
        return real(directory)

    monkeypatch.setattr(claims, "read_summary", counting)
    assert claims.devices_held(root) == {VF: "a/hostdev0"}
    assert read == ["a"]  # only the domain the index names
    assert claims.devices_held(root, besides="a") == {}


def test_a_stale_claim_is_dropped_and_a_damaged_index_rebuilt(tmp_path: Path) -> None:
    root = StateRoot(tmp_path)
    root.ensure()
    _domain(root, "a", {})
    # Claimed, but the ledger never got it (the attach failed, or a start cut short).
    claims.claim_devices(root, {VF: "a/hostdev0"})
    claims.claim_devices(root, {PCIAddress.parse("0000:3b:10.2"): "gone/hostdev0"})
    assert claims.devices_held(root) == {}
    assert json.loads((tmp_path / "devices.json").read_text()) == {}
    (tmp_path / "devices.json").write_text("{not json")
    _domain(root, "b", {"net1": str(VF)})
    assert claims.devices_held(root) == {VF: "b/net1"}


