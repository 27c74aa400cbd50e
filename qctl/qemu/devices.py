"""Edits of a live domain's device list, and the live definition a ledger describes.

Pure functions on frozen definitions. :func:`merge_live` is what lets the status file keep
a snapshot of the live XML that may lag behind the ledger (rendering the whole domain at
every hot-plug step would cost more than the step): the ledger says which devices exist,
and holds the XML of every device hot-plugged since the domain started.
"""

from __future__ import annotations

import dataclasses

from qctl.conf import DeviceDef, DomainDef, HostdevDef, InterfaceDef, RawXML, parse_device
from qctl.qemu.ledger import EntryState, Ledger

__all__ = ["merge_live", "with_device", "without_device"]

#: ledger states whose device the live XML shows (an attach not yet done is not shown;
#: a detach not yet done still is)
_SHOWN = (EntryState.ATTACHED, EntryState.DETACHING)


def with_device(domain: DomainDef, device: DeviceDef) -> DomainDef:
    """``domain`` with ``device`` added after the last device of its kind."""
    items = list(domain.devices.items)
    same = [i for i, d in enumerate(items) if type(d) is type(device)]
    position = (same[-1] + 1) if same else len(items)
    items.insert(position, device)
    return dataclasses.replace(
        domain, devices=dataclasses.replace(domain.devices, items=tuple(items))
    )


def without_device(domain: DomainDef, alias: str) -> DomainDef:
    """``domain`` without the device called ``alias``."""
    items: list[DeviceDef | RawXML] = [
        d for d in domain.devices.items if isinstance(d, RawXML) or d.alias != alias
    ]
    return dataclasses.replace(
        domain, devices=dataclasses.replace(domain.devices, items=tuple(items))
    )


def merge_live(snapshot: DomainDef, ledger: Ledger) -> DomainDef:
    """The live definition ``ledger`` describes, from a possibly older ``snapshot`` of it.

    Interfaces and host devices of the snapshot that the ledger no longer has were
    detached since; a device whose ledger entry keeps its XML (every hot-plugged one) is
    shown as that XML says, since the snapshot may predate it or hold an older device that
    had the same alias.
    """
    live = snapshot
    held = {entry.alias for entry in ledger}
    aliases = [d.alias for d in snapshot.interfaces] + [d.alias for d in snapshot.hostdevs]
    for alias in aliases:
        if alias is not None and alias not in held:
            live = without_device(live, alias)
    for entry in ledger:
        if entry.state not in _SHOWN or not entry.device_xml:
            continue
        # The ledger's copy wins: the snapshot may show an older device under this alias.
        live = without_device(live, entry.alias)
        added: InterfaceDef | HostdevDef = parse_device(entry.device_xml, live=True)
        live = with_device(live, added)
    return live
