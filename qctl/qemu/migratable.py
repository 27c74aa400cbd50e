"""The definition that travels: what a migration's destination must be started with.

A running domain's live definition says more than the destination may reuse. Some of it
must travel as it is, or the guest's state will not load: the resolved machine type
(``pc-q35-7.2``, not the alias ``q35``, which a newer QEMU maps to a newer machine), every
alias, MAC and guest PCI address, the controllers qctl added. Some of it is bound to the
source host and must be mapped back to what was asked:

- a tap name qctl chose (``vnet3``) is dropped; one the user named stays;
- the vhost-net choice recorded in ``<driver name>`` goes back to what the definition said
  (the destination decides for itself);
- a VF taken from a ``hostdev`` network pool goes back to ``type='network'`` on that pool,
  so the destination takes a VF from its own pool; its VLAN goes back to the one the
  interface asked for itself, as the pool's is this host's (the destination's pool sets
  its own).

"What was asked" is the interface of the definition as given, or for one hot-plugged later
the request its ledger entry kept (``asked_xml``); an entry written before qctl kept it
has neither, and its interface keeps the VLAN it shows.

Pure functions over definitions and ledger entries: no I/O.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable

from qctl.caps import QEMUCaps
from qctl.conf import (
    DeviceDef,
    DomainDef,
    InterfaceDef,
    InterfaceSourceDef,
    InterfaceType,
    RawXML,
    format_xml,
    is_user_alias,
    parse_device,
)
from qctl.qemu.ledger import LedgerEntry

__all__ = ["as_given", "migratable_definition", "migratable_xml", "resolve_machine"]

#: names the kernel gives taps qctl did not name (``vnet%d``)
_AUTO_TAP = re.compile(r"^vnet\d+$")


def resolve_machine(domain: DomainDef, caps: QEMUCaps) -> DomainDef:
    """``domain`` with its machine type resolved to the versioned name this QEMU runs.

    ``q35`` becomes ``pc-q35-7.2`` and no machine at all becomes this QEMU's default
    (``pc-i440fx-7.2``), so the live definition records what the guest really has. A name
    this QEMU does not list (or caps without machines, as in some tests) is left alone:
    planning has already refused unknown ones.
    """
    wanted = domain.os.machine
    for machine in caps.machines:
        if (
            machine.name == wanted
            or (wanted is not None and machine.alias == wanted)
            or (wanted is None and machine.is_default)
        ):
            if machine.name == wanted:
                return domain
            return dataclasses.replace(
                domain, os=dataclasses.replace(domain.os, machine=machine.name)
            )
    return domain


def _counterpart(
    iface: InterfaceDef, config: DomainDef, entry: LedgerEntry | None
) -> InterfaceDef | None:
    """The interface as asked that became ``iface``: of the definition as given, the one
    with the same alias, else an unaliased one with the same MAC; for a device hot-plugged
    later, the request its ledger entry kept; else ``None``."""
    if entry is not None and entry.asked_xml is not None:
        asked = parse_device(entry.asked_xml)
        return asked if isinstance(asked, InterfaceDef) else None
    for other in config.interfaces:
        if other.alias is not None and other.alias == iface.alias:
            return other
    for other in config.interfaces:
        # One the user aliased is matched by its alias above, never by MAC: the two halves
        # of a failover pair share theirs.
        if other.alias is None and other.mac is not None and other.mac == iface.mac:
            return other
    return None


def _travelling_interface(
    iface: InterfaceDef, asked: InterfaceDef | None, entry: LedgerEntry | None
) -> InterfaceDef:
    if entry is not None and entry.pool is not None and iface.type is InterfaceType.HOSTDEV:
        network, _ = entry.pool
        return dataclasses.replace(
            iface,
            type=InterfaceType.NETWORK,
            source=InterfaceSourceDef(network=network),
            managed=None,
            driver=None,
            vlan=asked.vlan if asked is not None else iface.vlan,
        )
    result = iface
    if iface.target_dev is not None:
        named = asked.target_dev if asked is not None else None
        if named is None and (asked is not None or _AUTO_TAP.match(str(iface.target_dev))):
            result = dataclasses.replace(result, target_dev=None)
    if iface.driver is not None and iface.type is not InterfaceType.HOSTDEV:
        asked_name = asked.driver.name if asked is not None and asked.driver else None
        if iface.driver.name != asked_name:
            driver = dataclasses.replace(iface.driver, name=asked_name)
            empty = (driver.name, driver.queues, driver.rx_queue_size, driver.tx_queue_size)
            result = dataclasses.replace(result, driver=None if empty == (None,) * 4 else driver)
    return result


def migratable_definition(
    live: DomainDef, config: DomainDef, ledger: Iterable[LedgerEntry] = ()
) -> DomainDef:
    """The definition the destination must be started with (see the module).

    ``live`` is the running domain's live definition, ``config`` the definition as given,
    ``ledger`` the domain's ledger entries (they say which VF came from which pool).
    """
    entries = {entry.alias: entry for entry in ledger}
    items: list[DeviceDef | RawXML] = []
    for item in live.devices.items:
        if isinstance(item, InterfaceDef):
            entry = entries.get(item.alias) if item.alias is not None else None
            item = _travelling_interface(item, _counterpart(item, config, entry), entry)
        items.append(item)
    devices = dataclasses.replace(live.devices, items=tuple(items))
    return dataclasses.replace(live, devices=devices)


def migratable_xml(live: DomainDef, config: DomainDef, ledger: Iterable[LedgerEntry] = ()) -> str:
    """:func:`migratable_definition` as XML (``qctl dumpxml NAME --migratable``)."""
    return format_xml(migratable_definition(live, config, ledger))


def as_given(travelling: DomainDef) -> DomainDef:
    """The destination's "definition as given" for a domain started from ``travelling``:
    the same, without the aliases qctl assigned (``net0``, ``pci.1``), which only a live
    definition may carry; user aliases (``ua-…``) stay."""
    items: list[DeviceDef | RawXML] = []
    for item in travelling.devices.items:
        if not isinstance(item, RawXML) and item.alias and not is_user_alias(item.alias):
            item = dataclasses.replace(item, alias=None)
        items.append(item)
    return dataclasses.replace(
        travelling, devices=dataclasses.replace(travelling.devices, items=tuple(items))
    )
