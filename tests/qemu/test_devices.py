"""Device list edits, and the live definition a ledger describes from an older snapshot."""

from __future__ import annotations

from qctl.conf import format_xml, parse_device, parse_domain
from qctl.qemu.devices import merge_live, with_device, without_device
from qctl.qemu.ledger import DeviceKind, EntryState, Ledger, LedgerEntry

SNAPSHOT = parse_domain(
    """<domain type='qemu'><name>d</name><memory>1024</memory><os><type>hvm</type></os>
<devices>
  <controller type='pci' index='0' model='pci-root'><alias name='pci.0'/></controller>
  <interface type='user'><mac address='52:54:00:00:00:01'/><alias name='net0'/></interface>
  <serial type='pty'><alias name='serial0'/></serial>
</devices></domain>""",
    live=True,
)
HOTPLUGGED = (
    "<interface type='user'><mac address='52:54:00:00:00:02'/><alias name='net1'/></interface>"
)


def entry(alias: str, state: EntryState, xml: str | None = None) -> LedgerEntry:
    return LedgerEntry(alias=alias, kind=DeviceKind.INTERFACE, state=state, device_xml=xml)


def aliases(domain: object) -> list[str | None]:
    return [i.alias for i in domain.interfaces]  # type: ignore[attr-defined]


def test_with_device_goes_after_its_kind_and_without_removes_it() -> None:
    added = with_device(SNAPSHOT, parse_device(HOTPLUGGED, live=True))
    assert aliases(added) == ["net0", "net1"]
    kinds = [type(d).__name__ for d in added.devices.items]
    assert kinds == ["ControllerDef", "InterfaceDef", "InterfaceDef", "SerialDef"]
    assert aliases(without_device(added, "net0")) == ["net1"]


def test_snapshot_in_step_with_the_ledger_is_unchanged() -> None:
    ledger = Ledger()
    ledger.put(entry("net0", EntryState.ATTACHED))
    assert format_xml(merge_live(SNAPSHOT, ledger)) == format_xml(SNAPSHOT)


def test_devices_attached_and_detached_since_the_snapshot() -> None:
    ledger = Ledger()
    ledger.put(entry("net1", EntryState.ATTACHED, HOTPLUGGED))  # net0 was detached since
    merged = merge_live(SNAPSHOT, ledger)
    assert aliases(merged) == ["net1"]
    assert str(merged.interfaces[0].mac) == "52:54:00:00:00:02"
    assert [s.alias for s in merged.serials] == ["serial0"]  # other devices are kept


def test_only_devices_the_guest_has_are_shown() -> None:
    ledger = Ledger()
    ledger.put(entry("net0", EntryState.DETACHING))  # still there until QEMU says it left
    ledger.put(entry("net1", EntryState.ATTACHING, HOTPLUGGED))  # not there yet
    assert aliases(merge_live(SNAPSHOT, ledger)) == ["net0"]
