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


def test_it_says_which_aliases_changed_since_a_count_of_changes() -> None:
    ledger = Ledger({"net0": _entry("net0")})  # what it starts with is no change
    assert ledger.changes == 0 and ledger.changed_since(0) == []
    ledger.put(_entry("net1"))
    ledger.put(_entry("net0", EntryState.DETACHING))
    seen = ledger.changes
    ledger.put(_entry("net1", EntryState.DETACHING))
    ledger.remove("net0")
    ledger.remove("absent")  # nothing removed: no change
    ledger.put(_entry("net2"))
    ledger.put(_entry("net1"))  # changed twice: said once, as last changed
    assert ledger.changes == seen + 4
    assert ledger.changed_since(seen) == ["net1", "net2", "net0"]
    assert ledger.changed_since(0) == ["net1", "net2", "net0"]
    assert ledger.changed_since(ledger.changes) == []


def test_an_alias_removed_and_put_again_since_the_count_moved_the_order() -> None:
    ledger = Ledger({"net0": _entry("net0"), "net1": _entry("net1")})
    ledger.remove("net0")
    before = ledger.changes  # net0 was gone at this count…
    ledger.put(_entry("net0"))  # …so coming back last is no move since then
    assert ledger.changed_since(before) == ["net0"]
    assert [e.alias for e in ledger] == ["net1", "net0"]
    ledger.remove("net1")
    ledger.put(_entry("net1"))  # it stood first at the last count: it moved
    assert ledger.changed_since(before + 1) is None
    assert ledger.changed_since(ledger.changes) == []
    assert ledger.position("net1") == 1


def test_it_forgets_old_changes_and_then_says_so() -> None:
    ledger = Ledger({"net0": _entry("net0")})
    seen = ledger.changes
    for n in range(1000):  # a long life of devices plugged and unplugged
        ledger.put(_entry(f"ua-{n}"))
        ledger.remove(f"ua-{n}")
    assert len(ledger._changed) <= 2 * len(ledger) + 64
    assert ledger.changed_since(seen) is None  # too old: write everything
    recent = ledger.changes
    ledger.put(_entry("net0", EntryState.DETACHING))
    assert ledger.changed_since(recent) == ["net0"]
