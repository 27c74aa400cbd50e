"""QEMU properties of a NIC: its ``-netdev`` backend and its ``-device`` frontend.

One source of truth for the command line and for hot-plug (``netdev_add``/``device_add``
take the same dictionaries), spelled the way libvirt 9.0 spells them, property for
property and in the same order, so a domain gives QEMU the same NIC under either tool.
Dictionaries keep insertion order; values are ``str``, ``int`` or ``bool`` as QEMU's JSON
syntax wants them (fd numbers and names are strings, as libvirt passes them).
"""

from __future__ import annotations

from qctl.conf import DomainDef, HostdevDef, InterfaceDef, InterfaceType, canonical_model
from qctl.errors import UnsupportedError
from qctl.qemu.placement import bus_id, netdev_id
from qctl.record import record

__all__ = [
    "USB_BUS",
    "USB_PORTS",
    "NICResources",
    "Props",
    "device_driver",
    "hostdev_props",
    "interface_device_props",
    "netdev_props",
    "pci_addr",
    "usb_controller_props",
]

Props = dict[str, str | int | bool]

# <model type> → QEMU device, where the two differ.
_MODEL_DRIVERS = {
    "virtio": "virtio-net-pci",
    "virtio-transitional": "virtio-net-pci-transitional",
    "virtio-non-transitional": "virtio-net-pci-non-transitional",
    "netfront": "xen-net-device",
}
#: libvirt's default NIC model on x86 when ``<model>`` is absent
DEFAULT_MODEL = "rtl8139"
#: the USB bus of the controller qctl adds for usb-net NICs (libvirt's id ``usb``), and its ports
USB_BUS = "usb.0"
USB_PORTS = 2


@record
class NICResources:
    """What the host side prepared for one NIC: how QEMU finds its fds.

    ``tap_fds`` and ``vhost_fds`` are references QEMU understands: inherited fd numbers on the
    command line, names passed with ``getfd`` on hot-plug, symbols for a dry run.
    """

    tap_fds: tuple[str, ...] = ()
    vhost_fds: tuple[str, ...] = ()
    tap_name: str | None = None


def device_driver(iface: InterfaceDef) -> str:
    """The QEMU device that gives the guest this NIC."""
    if iface.type is InterfaceType.HOSTDEV:
        return "vfio-pci"
    model = canonical_model(iface.model or DEFAULT_MODEL)
    return _MODEL_DRIVERS.get(model, model)


def pci_addr(slot: int, function: int) -> str:
    """QEMU's ``addr`` property: ``0x3``, or ``0x3.0x1`` for a non-zero function."""
    return f"{slot:#x}" if function == 0 else f"{slot:#x}.{function:#x}"


def _placement(domain: DomainDef, device: InterfaceDef | HostdevDef, props: Props) -> None:
    address = device.address
    if address is not None:
        props["bus"] = bus_id(domain, address.bus)
        props["addr"] = pci_addr(address.slot, address.function)


def netdev_props(iface: InterfaceDef, resources: NICResources) -> Props:
    """The ``-netdev``/``netdev_add`` properties of a non-hostdev interface."""
    assert iface.alias is not None
    if iface.type is InterfaceType.USER:
        return {"type": "user", "id": netdev_id(iface.alias)}
    if not resources.tap_fds:
        raise UnsupportedError(f"interface {iface.alias} has no tap prepared", capability="tap")
    props: Props = {"type": "tap"}
    if len(resources.tap_fds) == 1:
        props["fd"] = resources.tap_fds[0]
    else:
        props["fds"] = ":".join(resources.tap_fds)
    if resources.vhost_fds:
        props["vhost"] = True
        if len(resources.vhost_fds) == 1:
            props["vhostfd"] = resources.vhost_fds[0]
        else:
            props["vhostfds"] = ":".join(resources.vhost_fds)
    props["id"] = netdev_id(iface.alias)
    return props


def interface_device_props(domain: DomainDef, iface: InterfaceDef, *, failover: bool) -> Props:
    """The ``-device``/``device_add`` properties of an interface.

    ``failover`` says this QEMU has virtio-net's failover property; the caller has already
    refused a teaming config without it. A hostdev interface becomes a ``vfio-pci`` device.
    An emulated failover stand-in (``e1000e`` with transient teaming, a testing feature)
    gets the VF's ``failover_pair_id`` and an empty ``romfile``.
    """
    assert iface.alias is not None
    if iface.type is InterfaceType.HOSTDEV:
        return _vfio_props(domain, iface)
    driver = device_driver(iface)
    props: Props = {"driver": driver}
    if iface.is_virtio:
        queues = iface.driver.queues if iface.driver and iface.driver.queues else 1
        if queues > 1:
            props["mq"] = True
            props["vectors"] = 2 * queues + 2
        if iface.driver and iface.driver.rx_queue_size:
            props["rx_queue_size"] = iface.driver.rx_queue_size
        if iface.driver and iface.driver.tx_queue_size:
            props["tx_queue_size"] = iface.driver.tx_queue_size
        if iface.mtu:
            props["host_mtu"] = iface.mtu
        if failover and iface.teaming is not None and iface.teaming.persistent is None:
            props["failover"] = True
    props["netdev"] = netdev_id(iface.alias)
    props["id"] = iface.alias
    if iface.mac is not None:
        props["mac"] = str(iface.mac)
    if iface.boot_order is not None:
        props["bootindex"] = iface.boot_order
    standin = iface.is_failover_standin
    if standin:
        assert iface.teaming is not None and iface.teaming.persistent is not None
        props["failover_pair_id"] = iface.teaming.persistent
    if iface.is_usb:
        props["bus"] = USB_BUS
        props["port"] = str(_usb_port(domain, iface))
    elif driver != "xen-net-device":
        _placement(domain, iface, props)
    if standin:
        # No option ROM: the destination of a migration has the device hidden until the
        # guest negotiates failover, and would not know a ROM ramblock sent for it.
        props["romfile"] = ""
    return props


def _usb_port(domain: DomainDef, iface: InterfaceDef) -> int:
    """The USB port of a usb-net NIC: its place among the domain's usb-net NICs (from 1),
    or for one being hot-plugged the first port they leave free."""
    usb = [i.alias for i in domain.interfaces if i.is_usb]
    if iface.alias in usb:
        return usb.index(iface.alias) + 1
    return len(usb) + 1


def usb_controller_props(domain: DomainDef) -> Props | None:
    """The USB controller a domain with usb-net NICs needs (``-nodefaults`` adds none):
    libvirt's default on ``pc``, PIIX3's UHCI function at 00:01.2; ``None`` without them."""
    if not any(i.is_usb for i in domain.interfaces):
        return None
    return {"driver": "piix3-usb-uhci", "id": "usb", "bus": bus_id(domain, 0), "addr": "0x1.0x2"}


def _vfio_props(domain: DomainDef, iface: InterfaceDef) -> Props:
    assert iface.source is not None and iface.source.pci is not None and iface.alias
    props: Props = {"driver": "vfio-pci", "host": str(iface.source.pci), "id": iface.alias}
    if iface.boot_order is not None:
        props["bootindex"] = iface.boot_order
    if iface.teaming is not None and iface.teaming.persistent is not None:
        props["failover_pair_id"] = iface.teaming.persistent
    _placement(domain, iface, props)
    return props


def hostdev_props(domain: DomainDef, hostdev: HostdevDef) -> Props:
    """The ``-device``/``device_add`` properties of a ``<hostdev>`` PCI device; a transient
    teaming half gets ``failover_pair_id``, as a hostdev interface does."""
    assert hostdev.alias is not None
    props: Props = {"driver": "vfio-pci", "host": str(hostdev.source), "id": hostdev.alias}
    if hostdev.boot_order is not None:
        props["bootindex"] = hostdev.boot_order
    if hostdev.teaming is not None and hostdev.teaming.persistent is not None:
        props["failover_pair_id"] = hostdev.teaming.persistent
    _placement(domain, hostdev, props)
    return props
