"""Aliases and guest PCI addresses: what QEMU calls each device and where the guest sees it.

Pure functions from a domain definition to a domain definition with every device named
and placed, the way libvirt does it:

* aliases: user aliases (``ua-…``) are kept; interfaces get ``net0, net1, …``, PCI host
  devices and ``type='hostdev'`` interfaces share ``hostdev0, hostdev1, …``, serial ports
  ``serial0, …``, PCI controllers ``pci.N`` (the root bus ``pcie.0`` on q35, ``pci.0`` on pc);
  the netdev of an interface is ``host`` + its alias.
* addresses: on ``pc`` machines devices take free slots on ``pci.0`` (from slot 2: slot 0
  is the host bridge, slot 1 the PIIX3). On ``q35`` every hot-pluggable device sits alone
  on a ``pcie-root-port`` (so it can be unplugged later): first on a declared but empty
  port, else on a new port added at a free slot of ``pcie.0`` (slot 0 is the host bridge,
  0x1f the ICH9 functions).

The same functions place a device hot-plugged into a running domain; then no controller
can be added (a root port cannot be hot-plugged), so a q35 domain needs a free port.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterable
from typing import TypeVar, cast

from qctl.conf import (
    ControllerDef,
    ControllerModel,
    DeviceDef,
    DiskBus,
    DiskControllerDef,
    DiskDef,
    DomainDef,
    HostdevDef,
    InterfaceDef,
    InterfaceType,
    RawXML,
    SerialDef,
)
from qctl.errors import UnsupportedError, ValidationError
from qctl.types import PCIAddress

__all__ = [
    "alias_for",
    "assign_aliases",
    "assign_addresses",
    "bus_id",
    "is_q35",
    "needs_pci_address",
    "netdev_id",
    "place_device",
    "plan_domain",
    "root_port_props",
]

Placeable = InterfaceDef | HostdevDef
_P = TypeVar("_P", bound=InterfaceDef | HostdevDef | DiskDef | DiskControllerDef)
_ADDRESSED = (ControllerDef, InterfaceDef, HostdevDef, DiskDef, DiskControllerDef)

_PC_FIRST_SLOT = 2
_Q35_FIRST_SLOT = 1
_LAST_SLOT = 0x1E  # 0x1f holds the chipset's own functions on q35; keep it free on both


def is_q35(domain: DomainDef) -> bool:
    """True for q35 machine types (PCIe), False for pc/i440fx (conventional PCI)."""
    machine = domain.os.machine or "pc"
    return "q35" in machine


def netdev_id(alias: str) -> str:
    """The ``-netdev`` id of the interface with ``alias`` (libvirt's ``host`` prefix)."""
    return f"host{alias}"


def bus_id(domain: DomainDef, bus: int) -> str:
    """QEMU's id of the PCI bus with controller index ``bus``."""
    if bus == 0:
        return "pcie.0" if is_q35(domain) else "pci.0"
    return f"pci.{bus}"


def _with_items(domain: DomainDef, items: Iterable[DeviceDef | RawXML]) -> DomainDef:
    return dataclasses.replace(
        domain, devices=dataclasses.replace(domain.devices, items=tuple(items))
    )


def _alias_prefix(device: DeviceDef) -> str | None:
    if isinstance(device, InterfaceDef):
        return "hostdev" if device.type is InterfaceType.HOSTDEV else "net"
    if isinstance(device, HostdevDef):
        return "hostdev"
    if isinstance(device, SerialDef):
        return "serial"
    return None


def _free_alias(prefix: str, taken: set[str]) -> str:
    return next(f"{prefix}{n}" for n in itertools.count() if f"{prefix}{n}" not in taken)


def _aliased(device: DeviceDef, domain: DomainDef, taken: set[str]) -> DeviceDef:
    if device.alias is not None:
        return device
    if isinstance(device, ControllerDef):
        alias = bus_id(domain, device.index)
    else:
        prefix = _alias_prefix(device)
        assert prefix is not None
        alias = _free_alias(prefix, taken)
    taken.add(alias)
    return dataclasses.replace(device, alias=alias)


def assign_aliases(domain: DomainDef) -> DomainDef:
    """Give every device without an alias the one libvirt would."""
    taken = {d.alias for d in domain.devices.items if not isinstance(d, RawXML) and d.alias}
    items = [
        item if isinstance(item, RawXML) else _aliased(item, domain, taken)
        for item in domain.devices.items
    ]
    return _with_items(domain, items)


def alias_for(domain: DomainDef, device: Placeable) -> Placeable:
    """``device`` with an alias that is free in ``domain`` (hot-plug)."""
    taken = {d.alias for d in domain.devices.items if not isinstance(d, RawXML) and d.alias}
    result = _aliased(device, domain, taken)
    assert isinstance(result, InterfaceDef | HostdevDef)
    return result


def _used_addresses(domain: DomainDef) -> set[tuple[int, int, int]]:
    used: set[tuple[int, int, int]] = set()
    for item in domain.devices.items:
        if isinstance(item, _ADDRESSED) and item.address:
            used.add((item.address.bus, item.address.slot, item.address.function))
    return used


def _free_root_port(domain: DomainDef, used: set[tuple[int, int, int]]) -> int | None:
    busy = {bus for bus, _, _ in used}
    for ctl in domain.controllers:
        if ctl.model is ControllerModel.PCIE_ROOT_PORT and ctl.index not in busy:
            return ctl.index
    return None


def _free_slot(used: set[tuple[int, int, int]], first: int) -> int:
    for slot in range(first, _LAST_SLOT + 1):
        if (0, slot, 0) not in used:
            return slot
    raise UnsupportedError("no free PCI slot left on the root bus", capability="pci-slot")


def _ensure_root_controller(domain: DomainDef) -> DomainDef:
    if any(c.index == 0 for c in domain.controllers):
        return domain
    model = ControllerModel.PCIE_ROOT if is_q35(domain) else ControllerModel.PCI_ROOT
    root = ControllerDef(index=0, model=model, alias=bus_id(domain, 0))
    return _with_items(domain, (root, *domain.devices.items))


def needs_pci_address(device: InterfaceDef | HostdevDef | DiskDef | DiskControllerDef) -> bool:
    """False for devices the guest does not see on PCI: a usb-net NIC (on the USB bus) and
    a ``<hostdev>`` with ``<address type='unassigned'/>`` (not given to the guest)."""
    if isinstance(device, InterfaceDef):
        return not device.is_usb
    if isinstance(device, HostdevDef):
        return not device.unassigned
    return True


def place_device(domain: DomainDef, device: _P, *, may_add_port: bool) -> tuple[DomainDef, _P]:
    """Choose a guest address for ``device`` in ``domain``.

    Returns the domain (with a new ``pcie-root-port`` when one was added) and the device
    with its address. An address the device already has is checked for conflicts; a
    device that is not on PCI (:func:`needs_pci_address`) is returned as it is.
    """
    if not needs_pci_address(device):
        return domain, device
    if isinstance(device, InterfaceDef | HostdevDef) and device.auto_address:
        device = cast(_P, dataclasses.replace(device, auto_address=False))
    used = _used_addresses(domain)
    if device.address is not None:
        where = (device.address.bus, device.address.slot, device.address.function)
        if where in used:
            raise ValidationError(
                f"guest PCI address {device.address} is already in use", line=device.line
            )
        return domain, device
    if not is_q35(domain):
        slot = _free_slot(used, _PC_FIRST_SLOT)
        return domain, dataclasses.replace(device, address=PCIAddress(0, 0, slot, 0))
    port = _free_root_port(domain, used)
    if port is None:
        if not may_add_port:
            raise UnsupportedError(
                "no free pcie-root-port to hot-plug into: add an empty "
                "<controller type='pci' model='pcie-root-port'/> to the domain",
                capability="pcie-root-port",
            )
        port = max(c.index for c in domain.controllers) + 1
        slot = _free_slot(used, _Q35_FIRST_SLOT)
        controller = ControllerDef(
            index=port,
            model=ControllerModel.PCIE_ROOT_PORT,
            alias=bus_id(domain, port),
            address=PCIAddress(0, 0, slot, 0),
        )
        domain = _insert_controller(domain, controller)
    return domain, dataclasses.replace(device, address=PCIAddress(0, port, 0, 0))


def _insert_controller(domain: DomainDef, controller: ControllerDef) -> DomainDef:
    """Add ``controller`` after the last controller, so the live XML reads in order."""
    items = list(domain.devices.items)
    last = max((i for i, d in enumerate(items) if isinstance(d, ControllerDef)), default=-1)
    items.insert(last + 1, controller)
    return _with_items(domain, items)


def _address_controllers(domain: DomainDef) -> DomainDef:
    """Give root ports and bridges that have no address a free slot on the root bus."""
    first = _Q35_FIRST_SLOT if is_q35(domain) else _PC_FIRST_SLOT
    items = list(domain.devices.items)
    for i, item in enumerate(items):
        if isinstance(item, ControllerDef) and not item.model.is_root and item.address is None:
            slot = _free_slot(_used_addresses(_with_items(domain, items)), first)
            items[i] = dataclasses.replace(item, address=PCIAddress(0, 0, slot, 0))
    return _with_items(domain, items)


def _needs_pci(item: DeviceDef | RawXML, rank: int) -> bool:
    """True when ``item`` still needs a guest PCI address and is placed in round ``rank``:
    NICs and host devices, then disk controllers, then virtio disks."""
    if rank == 0:
        return (
            isinstance(item, InterfaceDef | HostdevDef)
            and item.address is None
            and needs_pci_address(item)
        )
    if rank == 1:
        # q35's sata controller 0 already has the chipset's address (see qctl.qemu.disk)
        return isinstance(item, DiskControllerDef) and item.address is None
    return isinstance(item, DiskDef) and item.bus is DiskBus.VIRTIO and item.address is None


def assign_addresses(domain: DomainDef) -> DomainDef:
    """Place every interface, host device, disk controller and virtio disk that has no
    guest address yet."""
    domain = _address_controllers(_ensure_root_controller(domain))
    for rank in range(3):
        while True:
            unplaced = next((d for d in domain.devices.items if _needs_pci(d, rank)), None)
            if unplaced is None:
                break
            assert isinstance(unplaced, InterfaceDef | HostdevDef | DiskDef | DiskControllerDef)
            domain, placed = place_device(domain, unplaced, may_add_port=True)
            domain = _with_items(
                domain, [placed if d is unplaced else d for d in domain.devices.items]
            )
    return domain


def plan_domain(domain: DomainDef) -> DomainDef:
    """The domain with every device named and placed: the base of the live definition."""
    return assign_aliases(assign_addresses(domain))


def root_port_props(domain: DomainDef, controller: ControllerDef) -> dict[str, str | int | bool]:
    """``-device`` properties of a ``pcie-root-port`` or ``pci-bridge`` controller."""
    assert controller.address is not None and controller.alias is not None
    props: dict[str, str | int | bool] = {"driver": controller.model.value}
    if controller.model is ControllerModel.PCIE_ROOT_PORT:
        props["port"] = 0x10 + controller.index - 1
        props["chassis"] = controller.index
    elif controller.model is ControllerModel.PCI_BRIDGE:
        props["chassis_nr"] = controller.index
    props["id"] = controller.alias
    props["bus"] = bus_id(domain, controller.address.bus)
    props["addr"] = f"{controller.address.slot:#x}"
    return props
