"""The ledger serializes losslessly and answers what is pending and held."""

from __future__ import annotations

import json

from qctl.qemu.ledger import DeviceKind, EntryState, Ledger, LedgerEntry, SavedVF


def _entry(alias: str, state: EntryState = EntryState.ATTACHED, **kw: object) -> LedgerEntry:
    return LedgerEntry(alias=alias, kind=DeviceKind.INTERFACE, state=state, **kw)  # type: ignore[arg-type]


def test_round_trip_through_json_text() -> None:
    ledger = Ledger()
    ledger.put(_entry("net0", tap="vnet0", netdev_id="hostnet0", fd_names=("fd-net0-0",)))
    ledger.put(
        LedgerEntry(
            alias="hostdev0",
            kind=DeviceKind.HOSTDEV_INTERFACE,
            state=EntryState.ATTACHING,
            pool=("sriov", "0000:03:10.2"),
            saved_vf=SavedVF(pf="eth2", vf=3, mac="52:54:00:00:00:09", vlan=0),
            host_device="0000:03:10.2",
            original_driver="ixgbevf",
        )
    )
    again = Ledger.from_json(json.loads(json.dumps(ledger.to_json())))
    assert list(again) == list(ledger)


def test_pending_and_taps() -> None:
    ledger = Ledger()
    ledger.put(_entry("net0", tap="vnet0"))
    ledger.put(_entry("net1", EntryState.DETACHING, tap="vnet1"))
    ledger.put(_entry("net2", EntryState.UNCERTAIN))
    assert [e.alias for e in ledger.pending()] == ["net1", "net2"]
    assert ledger.taps() == {"vnet0", "vnet1"}
    ledger.put(ledger.get("net1").evolve(state=EntryState.ATTACHED))  # type: ignore[union-attr]
    assert [e.alias for e in ledger.pending()] == ["net2"]
    ledger.remove("net2")
    ledger.remove("net2")
    assert "net2" not in ledger and len(ledger) == 2
