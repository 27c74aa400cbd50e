"""The definition that travels: machine type resolved, host-bound details mapped back.

``data/migratable/live.xml`` is a running domain's live XML (taps qctl named, the vhost
choice, a VF from the ``vfs`` pool, a NIC hot-plugged later) and ``config.xml`` the
definition it was started from; ``travel.out.xml`` is what the destination gets.
Regenerate with ``QCTL_REGEN_GOLDEN=1`` and review the diff.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from qctl import format_xml, parse_domain
from qctl.caps import QEMUCaps
from qctl.conf import DomainDef, InterfaceDef, InterfaceType, RawXML, VLANDef, VLANTagDef
from qctl.qemu.ledger import DeviceKind, EntryState, LedgerEntry
from qctl.qemu.migratable import as_given, migratable_definition, migratable_xml, resolve_machine

DATA = Path(__file__).parent / "data" / "migratable"
CAPS = Path(__file__).parent / "data" / "argv" / "qemu-7.2.caps.json"

LEDGER = [
    LedgerEntry(
        alias="ua-standby", kind=DeviceKind.INTERFACE, state=EntryState.ATTACHED, tap="vnet0"
    ),
    LedgerEntry(
        alias="ua-vf",
        kind=DeviceKind.HOSTDEV_INTERFACE,
        state=EntryState.ATTACHED,
        pool=("vfs", "0000:03:02.1"),
        host_device="0000:03:02.1",
    ),
]


def _live() -> DomainDef:
    return parse_domain((DATA / "live.xml").read_text(), source="live.xml", live=True)


def _config() -> DomainDef:
    return parse_domain((DATA / "config.xml").read_text(), source="config.xml")


def test_golden() -> None:
    text = migratable_xml(_live(), _config(), LEDGER)
    path = DATA / "travel.out.xml"
    if os.environ.get("QCTL_REGEN_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text()


def test_host_bound_details_mapped_back() -> None:
    standby, vf, named, hotplugged = migratable_definition(_live(), _config(), LEDGER).interfaces
    assert standby.target_dev is None and standby.driver is None  # qctl's tap, its choice
    assert (vf.type, vf.source and vf.source.network, vf.managed) == (
        InterfaceType.NETWORK,
        "vfs",
        None,
    )
    assert vf.teaming is not None and vf.teaming.persistent == "ua-standby"
    assert str(named.target_dev) == "mytap"  # the user named it
    assert named.driver is not None and named.driver.queues == 2
    assert hotplugged.target_dev is None and hotplugged.alias == "net3"
    assert [str(i.address) for i in (standby, vf, named, hotplugged)] == [
        str(i.address) for i in _live().interfaces
    ]


def _with_vf_vlan(domain: DomainDef, tag: int) -> DomainDef:
    items = tuple(
        dataclasses.replace(item, vlan=VLANDef(tags=(VLANTagDef(id=tag),)))
        if isinstance(item, InterfaceDef) and item.alias == "ua-vf"
        else item
        for item in domain.devices.items
    )
    return dataclasses.replace(domain, devices=dataclasses.replace(domain.devices, items=items))


def test_a_pool_vf_leaves_its_pools_vlan_and_keeps_its_own() -> None:
    """The VLAN a pool gave its VF is the source host's; the destination's pool sets its
    own. A VLAN the interface asked for itself travels with it."""
    from_pool = _with_vf_vlan(_live(), 7)  # the pool's VLAN, shown in the live XML
    vf = migratable_definition(from_pool, _config(), LEDGER).interfaces[1]
    assert vf.type is InterfaceType.NETWORK and vf.vlan is None
    own = migratable_definition(from_pool, _with_vf_vlan(_config(), 7), LEDGER).interfaces[1]
    assert own.vlan is not None and [t.id for t in own.vlan.tags] == [7]


def _hot_plugged_vf(asked: str | None) -> tuple[DomainDef, DomainDef, list[LedgerEntry]]:
    """The live VF (pool VLAN 7) as hot-plugged later, its request ``asked`` kept or not."""
    config = _config()
    items = tuple(
        i for i in config.devices.items if not (isinstance(i, InterfaceDef) and i.alias == "ua-vf")
    )
    config = dataclasses.replace(config, devices=dataclasses.replace(config.devices, items=items))
    ledger = [dataclasses.replace(LEDGER[0]), dataclasses.replace(LEDGER[1], asked_xml=asked)]
    return _with_vf_vlan(_live(), 7), config, ledger


REQUEST = (
    "<interface type='network'><source network='vfs'/><mac address='52:54:00:6d:90:02'/>"
    "{vlan}<teaming type='transient' persistent='ua-standby'/><alias name='ua-vf'/></interface>"
)


def _vf(domain: DomainDef) -> InterfaceDef:
    return next(i for i in domain.interfaces if i.alias == "ua-vf")


def test_a_hot_plugged_pool_vf_maps_back_to_its_request() -> None:
    """A VF hot-plugged from a pool has no counterpart in the definition as given: its
    ledger entry's request says what it asked (no VLAN: the pool's stays home; its own
    VLAN travels)."""
    live, config, ledger = _hot_plugged_vf(REQUEST.format(vlan=""))
    vf = next(
        i for i in migratable_definition(live, config, ledger).interfaces if i.alias == "ua-vf"
    )
    assert vf.type is InterfaceType.NETWORK and vf.vlan is None
    own = REQUEST.format(vlan="<vlan><tag id='7'/></vlan>")
    live, config, ledger = _hot_plugged_vf(own)
    vf = next(
        i for i in migratable_definition(live, config, ledger).interfaces if i.alias == "ua-vf"
    )
    assert vf.vlan is not None and [t.id for t in vf.vlan.tags] == [7]
    # An entry written before qctl kept requests: the VLAN it shows, as before.
    live, config, ledger = _hot_plugged_vf(None)
    vf = next(
        i for i in migratable_definition(live, config, ledger).interfaces if i.alias == "ua-vf"
    )
    assert vf.vlan is not None and [t.id for t in vf.vlan.tags] == [7]


def test_without_a_ledger_a_vf_stays_what_it_is() -> None:
    vf = migratable_definition(_live(), _config()).interfaces[1]
    assert vf.type is InterfaceType.HOSTDEV


def test_as_given_drops_only_qctl_aliases() -> None:
    given = as_given(migratable_definition(_live(), _config(), LEDGER))
    aliases = [d.alias for d in given.devices.items if not isinstance(d, RawXML)]
    assert [a for a in aliases if a] == ["ua-standby", "ua-vf"]
    # what the destination records parses back as a definition as given
    parse_domain(format_xml(given), source="given.xml")


@pytest.fixture(scope="module")
def caps() -> QEMUCaps:
    return QEMUCaps.from_json(CAPS.read_text())


@pytest.mark.parametrize(
    ("asked", "resolved"),
    [
        ("q35", "pc-q35-7.2"),
        ("pc", "pc-i440fx-7.2"),
        (None, "pc-i440fx-7.2"),
        ("pc-q35-6.2", "pc-q35-6.2"),
        ("no-such-machine", "no-such-machine"),
    ],
)
def test_machine_resolved(caps: QEMUCaps, asked: str | None, resolved: str) -> None:
    domain = _config()
    domain = dataclasses.replace(domain, os=dataclasses.replace(domain.os, machine=asked))
    assert resolve_machine(domain, caps).os.machine == resolved
