"""Reading documents: XML text in, definitions out, every problem found on the way.

The entry points parse, then validate (:mod:`qctl.conf.validate`), and either return the
definition or raise the first problem; :func:`check` returns all of them instead. Reading does
not stop at the first structural problem (an unknown interface type, a word where a number
belongs): it records it with the file, line and element path, keeps the offending device as
raw XML, and goes on, so one run reports everything that is wrong.

What the model does not know is kept (see :mod:`qctl.conf.model`): unknown attributes,
unknown child elements with the known sibling they followed, and unknown devices in their
place among the others.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Callable
from enum import StrEnum
from typing import TypedDict, TypeVar
from uuid import UUID

from qctl.conf.document import read_document
from qctl.conf.model import (
    Attr,
    ChildAttr,
    ControllerDef,
    ControllerModel,
    DeviceDef,
    DevicesDef,
    DiskBus,
    DiskControllerDef,
    DiskControllerType,
    DiskDef,
    DiskDevice,
    DiskFormat,
    DiskType,
    DomainDef,
    DomainType,
    DriveAddress,
    ForwardDef,
    ForwardMode,
    HostdevDef,
    InterfaceDef,
    InterfaceDriverDef,
    InterfaceSourceDef,
    InterfaceType,
    LinkState,
    MemoryDef,
    NetDriverName,
    NetworkDef,
    OSDef,
    RawXML,
    SerialDef,
    SerialType,
    TeamingDef,
    TeamingType,
    USBAddress,
    VCPUDef,
    VLANDef,
    VLANTagDef,
    canonical_model,
)
from qctl.conf.validate import Review, review_device, review_domain, review_network
from qctl.conf.xml import XMLNode, read_xml
from qctl.errors import ConfigError, ValidationError
from qctl.types import IfName, MACAddress, PCIAddress

__all__ = [
    "AnyDef",
    "check",
    "load",
    "load_domain",
    "load_network",
    "parse_device",
    "parse_domain",
    "parse_network",
    "review",
]

AnyDef = DomainDef | NetworkDef | InterfaceDef | HostdevDef
"""Whatever a document can define."""

_E = TypeVar("_E", bound=StrEnum)
_DECIMAL = re.compile(r"[0-9]+")
_HEX = re.compile(r"0[xX][0-9a-fA-F]+")
_UUID = re.compile(r"[0-9a-fA-F]{32}")
_BOOLEANS = {"yes": True, "no": False}
_PCI_FIELDS = ("domain", "bus", "slot", "function")


class _Abandon(Exception):
    """The element cannot become a definition; the reason is already recorded."""


class _Common(TypedDict):
    """The fields every element definition shares (see ``ElementDef``)."""

    extra_attrs: tuple[Attr, ...]
    child_attrs: tuple[ChildAttr, ...]
    extra: tuple[RawXML, ...]
    line: int | None
    child_lines: tuple[tuple[str, int], ...]


class _Context:
    """The problems found so far in one document."""

    def __init__(self, source: str | None) -> None:
        self.source = source
        self.problems: list[ConfigError] = []

    def problem(self, message: str, *, path: str, line: int | None) -> None:
        self.problems.append(ValidationError(message, source=self.source, line=line, path=path))


def _shown(value: str) -> str:
    """``value`` quoted for a message, cut short when it is long."""
    return repr(value if len(value) <= 40 else value[:40] + "…")


def _to_int(text: str, *, hex_ok: bool) -> int | None:
    """A non-negative integer: decimal, or ``0x…`` where ``hex_ok``; ``None`` if malformed."""
    try:
        if _DECIMAL.fullmatch(text):
            return int(text)
        if hex_ok and _HEX.fullmatch(text):
            return int(text, 16)
    except ValueError:  # more digits than Python converts
        return None
    return None


class _Reader:
    """Reads one element: hands out its attributes and children, and keeps what is left.

    A reader made by :meth:`child` is the element of a definition of its own; one made by
    :meth:`leaf` is a small element flattened into its owner's fields, whose unknown
    attributes end up in the owner's ``child_attrs`` under ``prefix``.
    """

    def __init__(
        self,
        ctx: _Context,
        node: XMLNode,
        path: str,
        *,
        prefix: str = "",
        owner: _Reader | None = None,
    ) -> None:
        self.ctx = ctx
        self.node = node
        self.path = path
        self.prefix = prefix
        self.owner = owner or self
        self._children = node.children()
        self._used: set[int] = set()
        self._used_attrs: set[str] = set()
        self._leaves: list[_Reader] = []
        self._child_lines: list[tuple[str, int]] = []  # of children read by child()

    @property
    def tag(self) -> str:
        return self.node.tag

    @property
    def line(self) -> int | None:
        return self.node.line

    def problem(self, message: str) -> None:
        """Record a problem with this element."""
        self.ctx.problem(message, path=self.path, line=self.line)

    def problems_inside(self) -> bool:
        """True when a problem was already recorded at or inside this element."""
        return any(
            p.path is not None and (p.path == self.path or p.path.startswith(self.path + "/"))
            for p in self.ctx.problems
        )

    def missing(self, tag: str) -> None:
        """Record that a required child element is absent."""
        self.ctx.problem(
            f"<{self.tag}> is missing <{tag}>", path=f"{self.path}/{tag}", line=self.line
        )

    # -- attributes ---------------------------------------------------------------------

    def attr(self, name: str, *, required: bool = False) -> str | None:
        """An attribute's value, now known; records a problem if required and absent."""
        self._used_attrs.add(name)
        value = self.node.attrs.get(name)
        if value is None and required:
            self.problem(f"<{self.tag}> needs the {name}= attribute")
        return value

    def int_attr(self, name: str, *, required: bool = False, hex_ok: bool = False) -> int | None:
        """An attribute holding a non-negative integer."""
        value = self.attr(name, required=required)
        return None if value is None else self.to_int(value, what=f"{name}=", hex_ok=hex_ok)

    def to_int(self, text: str, *, what: str, hex_ok: bool = False) -> int | None:
        """``text`` as a non-negative integer, or a recorded problem."""
        number = _to_int(text.strip(), hex_ok=hex_ok)
        if number is None:
            kind = "a decimal or 0x-prefixed hex" if hex_ok else "a non-negative decimal"
            self.problem(f"{what} {_shown(text)} is not {kind} integer")
        return number

    def bool_attr(self, name: str) -> bool | None:
        """A ``yes``/``no`` attribute."""
        value = self.attr(name)
        if value is None:
            return None
        if value not in _BOOLEANS:
            self.problem(f"{name}={_shown(value)} must be 'yes' or 'no'")
        return _BOOLEANS.get(value)

    def enum_attr(
        self, name: str, kind: type[_E], what: str, *, required: bool = False
    ) -> _E | None:
        """An attribute whose value must be one of ``kind``'s."""
        value = self.attr(name, required=required)
        if value is None:
            return None
        try:
            return kind(value)
        except ValueError:
            expected = ", ".join(member.value for member in kind)
            self.problem(f"unknown {what} {_shown(value)} (expected one of: {expected})")
            return None

    def ifname_attr(self, name: str, *, required: bool = False) -> IfName | None:
        """An attribute naming a host network interface."""
        value = self.attr(name, required=required)
        if value is None:
            return None
        try:
            return IfName(value)
        except ValueError as exc:
            self.problem(str(exc))
            return None

    def text(self) -> str:
        """The element's text (empty when it has none)."""
        return self.node.text or ""

    # -- children -----------------------------------------------------------------------

    def _matching(self, tag: str, accept: Callable[[XMLNode], bool] | None) -> list[int]:
        return [
            i
            for i, node in enumerate(self._children)
            if i not in self._used and node.tag == tag and (accept is None or accept(node))
        ]

    def _single(self, tag: str, accept: Callable[[XMLNode], bool] | None) -> XMLNode | None:
        found = self._matching(tag, accept)
        self._used.update(found)
        for duplicate in found[1:]:
            node = self._children[duplicate]
            self.ctx.problem(
                f"<{tag}> is given more than once in <{self.tag}>",
                path=f"{self.path}/{tag}",
                line=node.line,
            )
        return self._children[found[0]] if found else None

    def child(self, tag: str, accept: Callable[[XMLNode], bool] | None = None) -> _Reader | None:
        """The one child ``tag`` that is a definition of its own (``<source>``, ``<os>``)."""
        node = self._single(tag, accept)
        if node is None:
            return None
        if node.line is not None:
            self._child_lines.append((tag, node.line))
        return _Reader(self.ctx, node, f"{self.path}/{tag}")

    def leaf(self, tag: str, accept: Callable[[XMLNode], bool] | None = None) -> _Reader | None:
        """The one child ``tag`` whose content is flattened into the owner's fields."""
        node = self._single(tag, accept)
        if node is None:
            return None
        return self._leaf(node, tag, f"{self.path}/{tag}")

    def leaves(self, tag: str) -> list[_Reader]:
        """Every child ``tag`` (a repeated flattened element), in order."""
        found = self._matching(tag, None)
        self._used.update(found)
        return [
            self._leaf(self._children[i], f"{tag}[{n}]", f"{self.path}/{tag}[{n}]")
            for n, i in enumerate(found, start=1)
        ]

    def _leaf(self, node: XMLNode, name: str, path: str) -> _Reader:
        prefix = f"{self.prefix}/{name}" if self.prefix else name
        reader = _Reader(self.ctx, node, path, prefix=prefix, owner=self.owner)
        self.owner._leaves.append(reader)
        return reader

    def take_rest(self) -> list[XMLNode]:
        """Every child not handed out yet, in order; they count as known from now on."""
        rest = [node for i, node in enumerate(self._children) if i not in self._used]
        self._used.update(range(len(self._children)))
        return rest

    # -- what is left -------------------------------------------------------------------

    def _unused_attrs(self) -> tuple[Attr, ...]:
        return tuple(
            (name, value) for name, value in self.node.attrs.items() if name not in self._used_attrs
        )

    def _raw_children(self) -> tuple[RawXML, ...]:
        raws: list[RawXML] = []
        after: str | None = None
        for i, node in enumerate(self._children):
            if i in self._used:
                after = node.tag
            else:
                raws.append(RawXML(xml=node.to_xml(), tag=node.tag, after=after, line=node.line))
        return tuple(raws)

    def finish(self) -> _Common:
        """The unknown parts of this definition, and the lines of its flattened children.

        Unknown elements inside a flattened child have nowhere to go and are reported.
        """
        child_attrs: list[ChildAttr] = []
        child_lines = list(self._child_lines)
        for leaf in self._leaves:
            if leaf.line is not None:
                child_lines.append((leaf.prefix, leaf.line))
            child_attrs.extend((leaf.prefix, name, value) for name, value in leaf._unused_attrs())
            for i, node in enumerate(leaf._children):
                if i not in leaf._used and node.is_element:
                    self.ctx.problem(
                        f"unexpected <{node.tag}> inside <{leaf.tag}>",
                        path=f"{leaf.path}/{node.tag}",
                        line=node.line,
                    )
        return _Common(
            extra_attrs=self._unused_attrs(),
            child_attrs=tuple(child_attrs),
            extra=self._raw_children(),
            line=self.line,
            child_lines=tuple(child_lines),
        )


# -- values shared by several elements ----------------------------------------------------


def _is_pci_address(node: XMLNode) -> bool:
    return node.attrs.get("type") == "pci"


def _pci_address(r: _Reader) -> PCIAddress | None:
    """``domain bus slot function`` of an ``<address>`` (each defaults to 0, like libvirt)."""
    values = {name: r.int_attr(name, hex_ok=True) for name in _PCI_FIELDS}
    if any(values[name] is None and name in r.node.attrs for name in _PCI_FIELDS):
        return None  # a malformed number, already recorded
    try:
        return PCIAddress(**{name: value or 0 for name, value in values.items()})
    except ValueError as exc:
        r.problem(f"PCI address out of range: {exc}")
        return None


def _guest_address(r: _Reader) -> tuple[PCIAddress | None, bool]:
    """The guest PCI ``<address type='pci' …>`` of a device (other address types stay raw),
    and whether it was an empty ``<address type='pci'/>``: "place it", as libvirt reads it,
    not slot 0."""
    leaf = r.leaf("address", _is_pci_address)
    if leaf is None:
        return None, False
    leaf.attr("type")
    if not any(name in leaf.node.attrs for name in _PCI_FIELDS):
        return None, True
    return _pci_address(leaf), False


def _is_unassigned_address(node: XMLNode) -> bool:
    return node.attrs.get("type") == "unassigned"


def _teaming(r: _Reader) -> TeamingDef | None:
    leaf = r.leaf("teaming")
    if leaf is None:
        return None
    teaming_type = leaf.enum_attr("type", TeamingType, "teaming type", required=True)
    persistent = leaf.attr("persistent")
    return None if teaming_type is None else TeamingDef(type=teaming_type, persistent=persistent)


def _vlan(r: _Reader) -> VLANDef | None:
    """``<vlan trunk><tag id nativeMode/>…</vlan>``."""
    vlan = r.child("vlan")
    if vlan is None:
        return None
    trunk = vlan.bool_attr("trunk")
    tags: list[VLANTagDef] = []
    for leaf in vlan.leaves("tag"):
        number = leaf.int_attr("id", required=True)
        if number is not None and number > 4095:
            leaf.problem(f"VLAN tag id {number} is out of range (0 to 4095)")
        elif number is not None:
            tags.append(VLANTagDef(id=number, native_mode=leaf.attr("nativeMode")))
    if not tags and not vlan.problems_inside():
        vlan.problem("<vlan> needs at least one <tag id='…'/>")
    return VLANDef(tags=tuple(tags), trunk=trunk, **vlan.finish())


def _alias(r: _Reader) -> str | None:
    leaf = r.leaf("alias")
    return None if leaf is None else leaf.attr("name", required=True)


def _boot_order(r: _Reader) -> int | None:
    leaf = r.leaf("boot")
    return None if leaf is None else leaf.int_attr("order", required=True)


def _uuid(r: _Reader) -> UUID | None:
    leaf = r.leaf("uuid")
    if leaf is None:
        return None
    text = leaf.text().strip()
    if not _UUID.fullmatch(text.replace("-", "")):
        leaf.problem(f"malformed UUID {text!r}")
        return None
    return UUID(hex=text.replace("-", ""))


# -- devices ---------------------------------------------------------------------------------


def _read_interface_source(r: _Reader) -> InterfaceSourceDef:
    vendor_leaf, product_leaf = r.leaf("vendor"), r.leaf("product")
    vendor = None if vendor_leaf is None else vendor_leaf.int_attr("id", required=True, hex_ok=True)
    product = (
        None if product_leaf is None else product_leaf.int_attr("id", required=True, hex_ok=True)
    )
    for leaf, value in ((vendor_leaf, vendor), (product_leaf, product)):
        if leaf is not None and value is not None and value > 0xFFFF:
            leaf.problem(f"USB {leaf.tag} id {value:#x} is out of range (0 to 0xffff)")
    pci: PCIAddress | None = None
    usb: USBAddress | None = None
    address = r.leaf("address")
    if address is not None:
        # Without a type, a vendor/product means USB (as in libvirt); otherwise PCI.
        default = "usb" if vendor_leaf is not None or product_leaf is not None else "pci"
        kind = address.attr("type") or default
        if kind == "pci":
            pci = _pci_address(address)
        elif kind == "usb":
            bus = address.int_attr("bus", required=True)
            device = address.int_attr("device", required=True)
            if bus is not None and device is not None:
                usb = USBAddress(bus, device)
        else:
            address.problem(f"unknown source address type {kind!r} (expected pci or usb)")
    return InterfaceSourceDef(
        bridge=r.ifname_attr("bridge"),
        network=r.attr("network"),
        pci=pci,
        usb=usb,
        vendor=vendor if vendor is not None and vendor <= 0xFFFF else None,
        product=product if product is not None and product <= 0xFFFF else None,
        **r.finish(),
    )


def _read_interface_driver(r: _Reader) -> InterfaceDriverDef:
    return InterfaceDriverDef(
        name=r.enum_attr("name", NetDriverName, "driver name"),
        queues=r.int_attr("queues"),
        rx_queue_size=r.int_attr("rx_queue_size"),
        tx_queue_size=r.int_attr("tx_queue_size"),
        **r.finish(),
    )


def _read_interface(r: _Reader) -> InterfaceDef:
    kind = r.enum_attr("type", InterfaceType, "interface type", required=True)
    if kind is None:
        raise _Abandon
    managed = r.bool_attr("managed")
    mac = None
    leaf = r.leaf("mac")
    if leaf is not None and (text := leaf.attr("address", required=True)) is not None:
        try:
            mac = MACAddress.parse(text)
        except ValueError as exc:
            leaf.problem(str(exc))
    source = r.child("source")
    target_dev = target_managed = None
    if (leaf := r.leaf("target")) is not None:
        target_dev = leaf.ifname_attr("dev")
        target_managed = leaf.bool_attr("managed")
    model = None if (leaf := r.leaf("model")) is None else leaf.attr("type", required=True)
    driver = r.child("driver")
    teaming = _teaming(r)
    vlan = _vlan(r)
    link_state = None
    if (leaf := r.leaf("link")) is not None:
        link_state = leaf.enum_attr("state", LinkState, "link state", required=True)
    mtu = None if (leaf := r.leaf("mtu")) is None else leaf.int_attr("size", required=True)
    boot_order, alias = _boot_order(r), _alias(r)
    address, auto_address = _guest_address(r)
    return InterfaceDef(
        type=kind,
        mac=mac,
        source=None if source is None else _read_interface_source(source),
        target_dev=target_dev,
        target_managed=target_managed,
        model=None if model is None else canonical_model(model),
        driver=None if driver is None else _read_interface_driver(driver),
        teaming=teaming,
        link_state=link_state,
        mtu=mtu,
        boot_order=boot_order,
        alias=alias,
        address=address,
        auto_address=auto_address,
        managed=managed,
        vlan=vlan,
        **r.finish(),
    )


def _read_hostdev(r: _Reader) -> HostdevDef:
    r.attr("mode")
    r.attr("type")
    source = r.leaf("source")
    address = None if source is None else source.leaf("address")
    if source is None or address is None:
        r.problem("<hostdev> needs a <source> with the host PCI <address>")
        raise _Abandon
    address.attr("type")
    pci = _pci_address(address)
    if pci is None:
        raise _Abandon
    managed, boot_order, alias = r.bool_attr("managed"), _boot_order(r), _alias(r)
    driver = r.leaf("driver")
    teaming = _teaming(r)
    guest, auto_address = _guest_address(r)
    unassigned = r.leaf("address", _is_unassigned_address)
    if unassigned is not None:
        unassigned.attr("type")
    return HostdevDef(
        source=pci,
        managed=managed,
        boot_order=boot_order,
        alias=alias,
        address=guest,
        auto_address=auto_address,
        teaming=teaming,
        unassigned=unassigned is not None,
        driver_name=None if driver is None else driver.attr("name"),
        **r.finish(),
    )


def _read_controller(r: _Reader) -> ControllerDef:
    r.attr("type")
    index = r.int_attr("index", required=True)
    model = r.enum_attr("model", ControllerModel, "PCI controller model", required=True)
    if index is None or model is None:
        raise _Abandon
    alias = _alias(r)
    leaf = r.leaf("address", _is_pci_address)
    if leaf is not None:
        leaf.attr("type")
    address = None if leaf is None else _pci_address(leaf)
    return ControllerDef(index=index, model=model, alias=alias, address=address, **r.finish())


def _read_disk_controller(r: _Reader) -> DiskControllerDef:
    kind = r.enum_attr("type", DiskControllerType, "controller type", required=True)
    index = r.int_attr("index", required=True)
    if kind is None or index is None:
        raise _Abandon
    return DiskControllerDef(
        type=kind,
        index=index,
        model=r.attr("model"),
        alias=_alias(r),
        address=_guest_address(r)[0],
        **r.finish(),
    )


def _read_serial(r: _Reader) -> SerialDef:
    kind = r.enum_attr("type", SerialType, "serial type", required=True)
    if kind is None:
        raise _Abandon
    source = r.leaf("source")
    return SerialDef(
        type=kind,
        source_path=None if source is None else source.attr("path"),
        source_mode=None if source is None else source.attr("mode"),
        alias=_alias(r),
        **r.finish(),
    )


def _is_drive_address(node: XMLNode) -> bool:
    return node.attrs.get("type") == "drive"


def _drive_address(r: _Reader) -> DriveAddress | None:
    leaf = r.leaf("address", _is_drive_address)
    if leaf is None:
        return None
    leaf.attr("type")
    values = {name: leaf.int_attr(name) for name in ("controller", "bus", "target", "unit")}
    return DriveAddress(**{name: value or 0 for name, value in values.items()})


def _read_disk(r: _Reader) -> DiskDef:
    kind = r.enum_attr("type", DiskType, "disk type", required=True)
    device = r.enum_attr("device", DiskDevice, "disk device") or DiskDevice.DISK
    driver_name = disk_format = None
    if (leaf := r.leaf("driver")) is not None:
        driver_name = leaf.attr("name")
        disk_format = leaf.enum_attr("type", DiskFormat, "disk format")
    source = None
    if (leaf := r.leaf("source")) is not None:
        source = leaf.attr("file" if kind is DiskType.FILE else "dev")
    target_dev = target_bus = None
    if (leaf := r.leaf("target")) is None:
        r.missing("target")
    else:
        target_dev = leaf.attr("dev", required=True)
        target_bus = leaf.enum_attr("bus", DiskBus, "disk bus")
    readonly = r.leaf("readonly") is not None
    serial = None if (leaf := r.leaf("serial")) is None else leaf.text().strip()
    if kind is None or target_dev is None:
        raise _Abandon
    return DiskDef(
        type=kind,
        device=device,
        driver_name=driver_name,
        format=disk_format,
        source=source,
        target_dev=target_dev,
        target_bus=target_bus,
        readonly=readonly,
        serial=serial,
        boot_order=_boot_order(r),
        alias=_alias(r),
        address=_guest_address(r)[0],
        drive=_drive_address(r),
        **r.finish(),
    )


def _device_reader(node: XMLNode) -> Callable[[_Reader], DeviceDef] | None:
    """How to read ``node`` if the model knows this kind of device."""
    kind = node.attrs.get("type")
    if node.tag == "interface":
        return _read_interface
    if node.tag == "hostdev" and node.attrs.get("mode", "subsystem") == "subsystem":
        return _read_hostdev if kind == "pci" else None
    if node.tag == "controller":
        if kind in set(DiskControllerType):
            return _read_disk_controller
        return _read_controller if kind == "pci" else None
    if node.tag == "serial":
        return _read_serial if kind in set(SerialType) else None
    if node.tag == "disk" and kind in set(DiskType):
        return _read_disk if node.attrs.get("device", "disk") in set(DiskDevice) else None
    return None


def _read_device(r: _Reader) -> DeviceDef | RawXML:
    """A device the model knows, or the element kept raw (unknown, or broken: see problems)."""
    read = _device_reader(r.node)
    if read is not None:
        try:
            return read(r)
        except _Abandon:
            pass
    return RawXML(xml=r.node.to_xml(), tag=r.tag, line=r.line)


def _read_devices(r: _Reader) -> DevicesDef:
    emulator = r.leaf("emulator")
    counts: Counter[str] = Counter()
    items: list[DeviceDef | RawXML] = []
    for node in r.take_rest():
        counts[node.tag] += 1
        path = f"{r.path}/{node.tag}[{counts[node.tag]}]"
        items.append(_read_device(_Reader(r.ctx, node, path)))
    return DevicesDef(
        emulator=None if emulator is None else emulator.text(), items=tuple(items), **r.finish()
    )


# -- whole documents -------------------------------------------------------------------------


def _text(r: _Reader, tag: str) -> str | None:
    """The text of child ``tag`` (flattened), ``None`` when there is no such child."""
    leaf = r.leaf(tag)
    return None if leaf is None else leaf.text()


def _read_os(r: _Reader) -> OSDef:
    arch = machine = None
    os_type = "hvm"
    if (leaf := r.leaf("type")) is not None:
        arch, machine, os_type = leaf.attr("arch"), leaf.attr("machine"), leaf.text().strip()
    return OSDef(
        type=os_type,
        arch=arch,
        machine=machine,
        kernel=_text(r, "kernel"),
        initrd=_text(r, "initrd"),
        cmdline=_text(r, "cmdline"),
        **r.finish(),
    )


def _read_memory(r: _Reader) -> MemoryDef | None:
    leaf = r.leaf("memory")
    if leaf is None:
        r.missing("memory")
        return None
    unit = leaf.attr("unit")
    value = leaf.to_int(leaf.text(), what="memory")
    if value is None:
        return None
    try:
        return MemoryDef(value, unit)
    except ValueError as exc:
        leaf.problem(str(exc))
        return None


def _read_vcpu(r: _Reader) -> VCPUDef | None:
    leaf = r.leaf("vcpu")
    if leaf is None:
        return None
    current = leaf.int_attr("current")
    count = leaf.to_int(leaf.text(), what="vcpu count")
    return None if count is None else VCPUDef(count, current)


def _read_domain(r: _Reader) -> DomainDef:
    """A domain; where a required part is broken a stand-in is used so reading can go on
    (the problem is recorded, so the stand-in is never handed out)."""
    kind = r.enum_attr("type", DomainType, "domain type", required=True)
    name = _text(r, "name")
    if name is None:
        r.missing("name")
    uuid = _uuid(r)
    memory = _read_memory(r)
    vcpu = _read_vcpu(r)
    os_reader = r.child("os")
    if os_reader is None:
        r.missing("os")
    devices = r.child("devices")
    return DomainDef(
        type=kind or DomainType.QEMU,
        name=name or "",
        memory=memory or MemoryDef(0),
        os=OSDef() if os_reader is None else _read_os(os_reader),
        uuid=uuid,
        vcpu=vcpu,
        devices=DevicesDef() if devices is None else _read_devices(devices),
        namespaces=r.node.namespaces,
        source=r.ctx.source,
        **r.finish(),
    )


def _read_forward(r: _Reader) -> ForwardDef | None:
    mode = r.enum_attr("mode", ForwardMode, "forward mode", required=True)
    managed = r.bool_attr("managed")
    pf = None if (leaf := r.leaf("pf")) is None else leaf.ifname_attr("dev", required=True)
    addresses: list[PCIAddress] = []
    for leaf in r.leaves("address"):
        if leaf.attr("type") not in (None, "pci"):
            leaf.problem(f"unknown address type {leaf.node.attrs['type']!r} (expected pci)")
        elif (address := _pci_address(leaf)) is not None:
            addresses.append(address)
    if mode is None:
        return None
    return ForwardDef(mode=mode, managed=managed, pf=pf, addresses=tuple(addresses), **r.finish())


def _read_network(r: _Reader) -> NetworkDef:
    name = _text(r, "name")
    if name is None:
        r.missing("name")
    uuid = _uuid(r)
    forward = r.child("forward")
    bridge = None if (leaf := r.leaf("bridge")) is None else leaf.ifname_attr("name")
    vlan = _vlan(r)
    return NetworkDef(
        name=name or "",
        uuid=uuid,
        forward=None if forward is None else _read_forward(forward),
        bridge=bridge,
        vlan=vlan,
        **r.finish(),
    )


_ROOTS = ("domain", "network", "interface", "hostdev")


def _within(path: str, element: str) -> bool:
    """True when ``path`` is ``element`` or inside it."""
    return path == element or path.startswith(element + "/")


def _read(
    root: XMLNode,
    *,
    source: str | None,
    live: bool,
    lenient: bool,
    roots: tuple[str, ...] = _ROOTS,
) -> tuple[AnyDef | None, list[ConfigError], list[ValidationError]]:
    """Read and validate a parsed document: the definition (``None`` if it cannot be had),
    every problem and every warning, in line order.

    A validation problem about an element that had a reading problem (at it or inside it) is
    left out: it is most likely about what was dropped or stood in for the broken part.
    """
    path = f"/{root.tag}"
    if root.tag not in roots:
        expected = " or ".join(f"<{tag}>" for tag in roots)
        error = ValidationError(
            f"expected a {expected} document, not <{root.tag}>",
            source=source,
            line=root.line,
            path=path,
        )
        return None, [error], []
    ctx = _Context(source)
    reader = _Reader(ctx, root, path)
    defn: AnyDef | None = None
    found = Review()
    if root.tag == "domain":
        defn = _read_domain(reader)
        found = review_domain(defn, source=source, live=live, lenient=lenient)
    elif root.tag == "network":
        defn = _read_network(reader)
        found = review_network(defn, source=source, lenient=lenient)
    else:
        device = _read_device(reader)
        if isinstance(device, InterfaceDef | HostdevDef):
            defn = device
            found = review_device(device, source=source, live=live, lenient=lenient)
        elif not ctx.problems:
            reader.problem(
                f"<{root.tag}> of this kind is not supported "
                "(qctl knows <hostdev mode='subsystem' type='pci'>)"
            )
    read_paths = [problem.path for problem in ctx.problems if problem.path is not None]

    def kept(problem: ValidationError) -> bool:
        return problem.path is None or not any(_within(path, problem.path) for path in read_paths)

    problems = ctx.problems + [problem for problem in found.errors if kept(problem)]
    problems.sort(key=lambda problem: (problem.line is None, problem.line or 0))
    return defn, problems, [warning for warning in found.warnings if kept(warning)]


def _parse(
    data: str | bytes, *, source: str | None, live: bool, lenient: bool, roots: tuple[str, ...]
) -> AnyDef:
    root = read_xml(data, source=source)
    defn, problems, _ = _read(root, source=source, live=live, lenient=lenient, roots=roots)
    if problems:
        raise problems[0]
    assert defn is not None  # no problem means there is a definition
    return defn


def parse_domain(
    data: str | bytes, *, source: str | None = None, live: bool = False, lenient: bool = False
) -> DomainDef:
    """Parse and validate a ``<domain>`` document.

    ``source`` names the document in errors (a file name). ``live`` accepts the aliases qctl
    gives devices itself (``net0``), as found in the XML of a running domain. ``lenient``
    accepts parts qctl would not apply (:mod:`qctl.conf.support`), for ``format``.
    Raises :class:`~qctl.errors.ConfigError` (the first problem) when it is not valid.
    """
    defn = _parse(data, source=source, live=live, lenient=lenient, roots=("domain",))
    assert isinstance(defn, DomainDef)
    return defn


def parse_network(
    data: str | bytes, *, source: str | None = None, lenient: bool = False
) -> NetworkDef:
    """Parse and validate a ``<network>`` pool document."""
    defn = _parse(data, source=source, live=False, lenient=lenient, roots=("network",))
    assert isinstance(defn, NetworkDef)
    return defn


def parse_device(
    data: str | bytes, *, source: str | None = None, live: bool = False, lenient: bool = False
) -> InterfaceDef | HostdevDef:
    """Parse and validate a lone ``<interface>`` or ``<hostdev>`` (a device to attach).

    Only the device's own rules are checked here; checking it against the domain it joins
    is :func:`~qctl.conf.validate.validate_device` with ``domain=``.
    """
    defn = _parse(data, source=source, live=live, lenient=lenient, roots=("interface", "hostdev"))
    assert isinstance(defn, InterfaceDef | HostdevDef)
    return defn


def load(path: str | os.PathLike[str], *, live: bool = False, lenient: bool = False) -> AnyDef:
    """Read, parse and validate the document in file ``path``, whatever its root element.

    The file name is the source named in errors; ``-`` reads standard input. An unreadable
    file, or one over :data:`~qctl.conf.document.MAX_DOCUMENT_BYTES`, is a
    :class:`~qctl.errors.ConfigError` too. ``lenient`` as for :func:`parse_domain`.
    """
    source = os.fspath(path)
    return _parse(read_document(path), source=source, live=live, lenient=lenient, roots=_ROOTS)



def load_domain(
    path: str | os.PathLike[str], *, live: bool = False, lenient: bool = False
) -> DomainDef:
    """Read, parse and validate the ``<domain>`` in file ``path`` (any other root element
    is a :class:`~qctl.errors.ConfigError` naming the file)."""
    return parse_domain(read_document(path), source=os.fspath(path), live=live, lenient=lenient)


def load_network(path: str | os.PathLike[str], *, lenient: bool = False) -> NetworkDef:
    """Read, parse and validate the ``<network>`` in file ``path``."""
    return parse_network(read_document(path), source=os.fspath(path), lenient=lenient)


def review(
    data: str | bytes, *, source: str | None = None, live: bool = False, lenient: bool = False
) -> tuple[list[ConfigError], list[ValidationError]]:
    """Every problem and every warning in a document of any kind, each in line order.

    With ``lenient``, parts qctl would not apply are warnings instead of problems.
    Not well-formed XML is one :class:`~qctl.errors.XMLSyntaxError`; everything else is a
    :class:`~qctl.errors.ValidationError` with the element path.
    """
    try:
        root = read_xml(data, source=source)
    except ConfigError as exc:
        return [exc], []
    _, problems, warnings = _read(root, source=source, live=live, lenient=lenient)
    return problems, warnings


def check(data: str | bytes, *, source: str | None = None, live: bool = False) -> list[ConfigError]:
    """Every problem in a document of any kind, in line order; empty when it is valid
    (:func:`review` without the warnings)."""
    return review(data, source=source, live=live)[0]
