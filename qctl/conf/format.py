"""Writing definitions back as XML: one function for every kind of definition.

The output is normalized so it can be compared and diffed: two-space indentation, known
children in libvirt's order, known attributes in a fixed order followed by the unknown ones
in their original order, numbers in libvirt's spelling (PCI parts in hex, ``yes``/``no``),
and a trailing newline. Unknown elements go back next to the known sibling they followed.
Formatting what :mod:`qctl.conf.parse` read gives the same text when done twice.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from qctl.conf.model import (
    ControllerDef,
    DeviceDef,
    DevicesDef,
    DiskControllerDef,
    DiskDef,
    DiskType,
    DomainDef,
    DriveAddress,
    ElementDef,
    ForwardDef,
    HostdevDef,
    InterfaceDef,
    InterfaceDriverDef,
    InterfaceSourceDef,
    NetworkDef,
    OSDef,
    RawXML,
    SerialDef,
    TeamingDef,
    VLANDef,
)
from qctl.conf.xml import OutElement, render_xml
from qctl.types import PCIAddress

__all__ = ["format_xml"]

_Value = str | int | bool | None
_INDEX = re.compile(r"\[\d+\]$")


def _spell(value: str | int | bool) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def _pci_attrs(address: PCIAddress | None) -> list[tuple[str, _Value]]:
    if address is None:
        return []
    return [
        ("domain", f"0x{address.domain:04x}"),
        ("bus", f"0x{address.bus:02x}"),
        ("slot", f"0x{address.slot:02x}"),
        ("function", f"0x{address.function:x}"),
    ]


class _Builder:
    """Builds the element of one definition: its attributes, known children, and the rest."""

    def __init__(self, tag: str, defn: ElementDef) -> None:
        self.defn = defn
        self.out = OutElement(tag)
        self._known: list[tuple[str, OutElement | str]] = []

    def attrs(self, *attrs: tuple[str, _Value]) -> None:
        """Known attributes of the element itself, in this order; ``None`` ones left out."""
        self.out.attrs.extend((name, _spell(value)) for name, value in attrs if value is not None)

    def leaf(
        self, path: str, attrs: Sequence[tuple[str, _Value]] = (), text: str | None = None
    ) -> OutElement | None:
        """A flattened child at ``path`` (relative, e.g. ``source/address``), with the unknown
        attributes kept for it; ``None`` when it has nothing to say."""
        known = [(name, _spell(value)) for name, value in attrs if value is not None]
        unknown = self.defn.child_attrs  # (mostly none: a definition's every leaf asks)
        kept = [(name, value) for where, name, value in unknown if where == path] if unknown else []
        if not known and not kept and text is None:
            return None
        tag = path.rsplit("/", 1)[-1]
        if tag.endswith("]"):
            tag = _INDEX.sub("", tag)
        return OutElement(tag, known + kept, text)

    def add(self, tag: str, child: OutElement | str | None) -> None:
        """Append a known child (skipped when ``None``)."""
        if child is not None:
            self._known.append((tag, child))

    def add_leaf(
        self, path: str, attrs: Sequence[tuple[str, _Value]] = (), text: str | None = None
    ) -> None:
        self.add(path, self.leaf(path, attrs, text))

    def done(self) -> OutElement:
        """The element, unknown attributes last and unknown children back in their places."""
        self.out.attrs.extend(self.defn.extra_attrs)
        self.out.children = _place(self._known, self.defn.extra)
        return self.out


def _place(
    known: list[tuple[str, OutElement | str]], extra: Sequence[RawXML]
) -> list[OutElement | str]:
    """Known children in order, each unknown one right after the last known sibling with the
    tag it followed (at the start when it followed none, at the end when that sibling is gone)."""
    last = {tag: i for i, (tag, _) in enumerate(known)}
    head: list[OutElement | str] = []
    tail: list[OutElement | str] = []
    after: dict[int, list[OutElement | str]] = {}
    for raw in extra:
        if raw.after is None:
            head.append(raw.xml)
        elif raw.after in last:
            after.setdefault(last[raw.after], []).append(raw.xml)
        else:
            tail.append(raw.xml)
    placed = head
    for i, (_, child) in enumerate(known):
        placed.append(child)
        placed.extend(after.get(i, ()))
    return placed + tail


def _interface_source(source: InterfaceSourceDef) -> OutElement:
    b = _Builder("source", source)
    b.attrs(
        ("network", source.network),
        ("bridge", None if source.bridge is None else str(source.bridge)),
    )
    if source.vendor is not None:
        b.add_leaf("vendor", [("id", f"0x{source.vendor:04x}")])
    if source.product is not None:
        b.add_leaf("product", [("id", f"0x{source.product:04x}")])
    if source.pci is not None:
        b.add_leaf("address", [("type", "pci"), *_pci_attrs(source.pci)])
    if source.usb is not None:
        b.add_leaf(
            "address", [("type", "usb"), ("bus", source.usb.bus), ("device", source.usb.device)]
        )
    return b.done()


def _interface_driver(driver: InterfaceDriverDef) -> OutElement:
    b = _Builder("driver", driver)
    b.attrs(
        ("name", None if driver.name is None else driver.name.value),
        ("queues", driver.queues),
        ("rx_queue_size", driver.rx_queue_size),
        ("tx_queue_size", driver.tx_queue_size),
    )
    return b.done()


def _interface(iface: InterfaceDef) -> OutElement:
    b = _Builder("interface", iface)
    b.attrs(("type", iface.type.value), ("managed", iface.managed))
    b.add_leaf("mac", [("address", None if iface.mac is None else str(iface.mac))])
    b.add("source", None if iface.source is None else _interface_source(iface.source))
    b.add_leaf(
        "target",
        [
            ("dev", None if iface.target_dev is None else str(iface.target_dev)),
            ("managed", iface.target_managed),
        ],
    )
    b.add_leaf("model", [("type", iface.model)])
    b.add("driver", None if iface.driver is None else _interface_driver(iface.driver))
    _add_teaming(b, iface.teaming)
    b.add("vlan", None if iface.vlan is None else _vlan(iface.vlan))
    b.add_leaf("link", [("state", None if iface.link_state is None else iface.link_state.value)])
    b.add_leaf("mtu", [("size", iface.mtu)])
    b.add_leaf("boot", [("order", iface.boot_order)])
    b.add_leaf("alias", [("name", iface.alias)])
    _add_guest_address(b, iface.address, auto=iface.auto_address)
    return b.done()


def _add_teaming(b: _Builder, teaming: TeamingDef | None) -> None:
    b.add_leaf(
        "teaming",
        []
        if teaming is None
        else [("type", teaming.type.value), ("persistent", teaming.persistent)],
    )


def _vlan(vlan: VLANDef) -> OutElement:
    b = _Builder("vlan", vlan)
    b.attrs(("trunk", vlan.trunk))
    for n, tag in enumerate(vlan.tags, start=1):
        b.add("tag", b.leaf(f"tag[{n}]", [("id", tag.id), ("nativeMode", tag.native_mode)]))
    return b.done()


def _add_guest_address(b: _Builder, address: PCIAddress | None, *, auto: bool = False) -> None:
    if address is not None:
        b.add_leaf("address", [("type", "pci"), *_pci_attrs(address)])
    elif auto:
        b.add_leaf("address", [("type", "pci")])


def _hostdev(hostdev: HostdevDef) -> OutElement:
    b = _Builder("hostdev", hostdev)
    b.attrs(("mode", "subsystem"), ("type", "pci"), ("managed", hostdev.managed))
    b.add_leaf("driver", [("name", hostdev.driver_name)])
    source = b.leaf("source") or OutElement("source")
    address = b.leaf("source/address", _pci_attrs(hostdev.source))
    if address is not None:
        source.children.append(address)
    b.add("source", source)
    b.add_leaf("boot", [("order", hostdev.boot_order)])
    b.add_leaf("alias", [("name", hostdev.alias)])
    _add_teaming(b, hostdev.teaming)
    _add_guest_address(b, hostdev.address, auto=hostdev.auto_address)
    if hostdev.unassigned:
        b.add_leaf("address", [("type", "unassigned")])
    return b.done()


def _controller(controller: ControllerDef) -> OutElement:
    b = _Builder("controller", controller)
    b.attrs(("type", "pci"), ("index", controller.index), ("model", controller.model.value))
    b.add_leaf("alias", [("name", controller.alias)])
    _add_guest_address(b, controller.address)
    return b.done()


def _disk_controller(controller: DiskControllerDef) -> OutElement:
    b = _Builder("controller", controller)
    b.attrs(
        ("type", controller.type.value), ("index", controller.index), ("model", controller.model)
    )
    b.add_leaf("alias", [("name", controller.alias)])
    _add_guest_address(b, controller.address)
    return b.done()


def _serial(serial: SerialDef) -> OutElement:
    b = _Builder("serial", serial)
    b.attrs(("type", serial.type.value))
    b.add_leaf("source", [("mode", serial.source_mode), ("path", serial.source_path)])
    b.add_leaf("alias", [("name", serial.alias)])
    return b.done()


def _drive_attrs(drive: DriveAddress) -> list[tuple[str, _Value]]:
    return [
        ("type", "drive"),
        ("controller", drive.controller),
        ("bus", drive.bus),
        ("target", drive.target),
        ("unit", drive.unit),
    ]


def _disk(disk: DiskDef) -> OutElement:
    b = _Builder("disk", disk)
    b.attrs(("type", disk.type.value), ("device", disk.device.value))
    b.add_leaf(
        "driver",
        [("name", disk.driver_name), ("type", None if disk.format is None else disk.format.value)],
    )
    source_key = "file" if disk.type is DiskType.FILE else "dev"
    b.add_leaf("source", [(source_key, disk.source)])
    b.add_leaf(
        "target",
        [
            ("dev", disk.target_dev),
            ("bus", None if disk.target_bus is None else disk.target_bus.value),
        ],
    )
    if disk.readonly:
        b.add("readonly", OutElement("readonly"))
    if disk.serial is not None:
        b.add_leaf("serial", text=disk.serial)
    b.add_leaf("boot", [("order", disk.boot_order)])
    b.add_leaf("alias", [("name", disk.alias)])
    _add_guest_address(b, disk.address)
    if disk.drive is not None:
        b.add_leaf("address", _drive_attrs(disk.drive))
    return b.done()


def _device(item: DeviceDef | RawXML) -> OutElement | str:
    if isinstance(item, RawXML):
        return item.xml
    if isinstance(item, InterfaceDef):
        return _interface(item)
    if isinstance(item, HostdevDef):
        return _hostdev(item)
    if isinstance(item, ControllerDef):
        return _controller(item)
    if isinstance(item, DiskControllerDef):
        return _disk_controller(item)
    if isinstance(item, DiskDef):
        return _disk(item)
    return _serial(item)


def _devices(devices: DevicesDef) -> OutElement:
    b = _Builder("devices", devices)
    b.add_leaf("emulator", text=devices.emulator)
    for item in devices.items:
        b.add("device", _device(item))
    return b.done()


def _os(os: OSDef) -> OutElement:
    b = _Builder("os", os)
    b.add_leaf("type", [("arch", os.arch), ("machine", os.machine)], os.type)
    for tag, text in (("kernel", os.kernel), ("initrd", os.initrd), ("cmdline", os.cmdline)):
        if text is not None:
            b.add_leaf(tag, text=text)
    return b.done()


def _domain(domain: DomainDef) -> OutElement:
    b = _Builder("domain", domain)
    b.attrs(("type", domain.type.value))
    b.add_leaf("name", text=domain.name)
    if domain.uuid is not None:
        b.add_leaf("uuid", text=str(domain.uuid))
    b.add_leaf("memory", [("unit", domain.memory.unit)], str(domain.memory.value))
    if domain.vcpu is not None:
        b.add_leaf("vcpu", [("current", domain.vcpu.current)], str(domain.vcpu.count))
    b.add("os", _os(domain.os))
    b.add("devices", _devices(domain.devices))
    return b.done()


def _forward(forward: ForwardDef) -> OutElement:
    b = _Builder("forward", forward)
    b.attrs(("mode", forward.mode.value), ("managed", forward.managed))
    if forward.pf is not None:
        b.add_leaf("pf", [("dev", str(forward.pf))])
    for n, address in enumerate(forward.addresses, start=1):
        b.add("address", b.leaf(f"address[{n}]", [("type", "pci"), *_pci_attrs(address)]))
    return b.done()


def _network(network: NetworkDef) -> OutElement:
    b = _Builder("network", network)
    b.add_leaf("name", text=network.name)
    if network.uuid is not None:
        b.add_leaf("uuid", text=str(network.uuid))
    b.add("forward", None if network.forward is None else _forward(network.forward))
    if network.bridge is not None:
        b.add_leaf("bridge", [("name", str(network.bridge))])
    b.add("vlan", None if network.vlan is None else _vlan(network.vlan))
    return b.done()


def format_xml(defn: DomainDef | NetworkDef | InterfaceDef | HostdevDef) -> str:
    """The normalized XML of a domain, network pool or device definition.

    Raises :class:`~qctl.errors.XMLSyntaxError` only if a :class:`~qctl.conf.model.RawXML`
    built in code is not well-formed.
    """
    if isinstance(defn, DomainDef):
        return render_xml(_domain(defn), namespaces=defn.namespaces)
    if isinstance(defn, NetworkDef):
        return render_xml(_network(defn))
    if isinstance(defn, InterfaceDef):
        return render_xml(_interface(defn))
    return render_xml(_hostdev(defn))
