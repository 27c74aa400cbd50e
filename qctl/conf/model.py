"""The configuration model: frozen definitions of domains, devices and network pools.

Each ``*Def`` mirrors one XML element of libvirt's domain or network format, holding only
typed values (enums, :class:`~qctl.types.MACAddress`, :class:`~qctl.types.PCIAddress`, …),
never XML objects. What the model does not know is kept so a document survives a round trip:

* ``extra_attrs`` — unknown attributes of the element itself, ``(name, value)`` in document
  order (namespaced names in ``{uri}local`` notation);
* ``child_attrs`` — unknown attributes of small child elements that the model flattens into
  fields (``<mac address=… type=…>`` becomes ``mac`` plus ``("mac", "type", …)``), as
  ``(relative element path, name, value)``;
* ``extra`` — unknown child elements as :class:`RawXML` fragments, each remembering the known
  sibling it followed so it is written back at the same place.

``line`` (and ``child_lines`` for its children) record where a definition came from so
errors can name the line; they do not take part in equality. Definitions built in code (a
hot-plugged interface) simply have no lines.

Value rules that a type can enforce on its own (a MAC address has six bytes, a PCI slot is at
most 0x1f, a memory unit is known) are enforced when the value is built; rules that relate
fields or devices to each other live in :mod:`qctl.conf.validate`.
"""

from __future__ import annotations

import re
from dataclasses import field
from enum import StrEnum
from uuid import UUID

from qctl.record import record
from qctl.types import IfName, MACAddress, PCIAddress

__all__ = [
    "FAILOVER_STANDIN_MODELS",
    "VIRTIO_MODELS",
    "Attr",
    "ChildAttr",
    "ControllerDef",
    "ControllerModel",
    "DeviceDef",
    "DevicesDef",
    "DiskBus",
    "DiskControllerDef",
    "DiskControllerType",
    "DiskDef",
    "DiskDevice",
    "DiskFormat",
    "DiskType",
    "DriveAddress",
    "DomainDef",
    "DomainType",
    "ElementDef",
    "ForwardDef",
    "ForwardMode",
    "HostdevDef",
    "InterfaceDef",
    "InterfaceDriverDef",
    "InterfaceSourceDef",
    "InterfaceType",
    "LinkState",
    "MemoryDef",
    "NetDriverName",
    "NetworkDef",
    "OSDef",
    "RawXML",
    "SerialDef",
    "SerialType",
    "TeamingDef",
    "TeamingType",
    "USBAddress",
    "VCPUDef",
    "VLANDef",
    "VLANTagDef",
    "canonical_model",
    "device_tag",
    "is_device_id",
    "is_user_alias",
]

Attr = tuple[str, str]
"""An attribute the model does not know: ``(name, value)``."""

ChildAttr = tuple[str, str, str]
"""An unknown attribute of a flattened child element: ``(relative path, name, value)``."""


class DomainType(StrEnum):
    """``<domain type=…>``: the accelerator, TCG (``qemu``) or KVM."""

    QEMU = "qemu"
    KVM = "kvm"


class ControllerModel(StrEnum):
    """``<controller type='pci' model=…>``: libvirt's PCI controller models."""

    PCI_ROOT = "pci-root"
    PCIE_ROOT = "pcie-root"
    PCI_BRIDGE = "pci-bridge"
    PCIE_ROOT_PORT = "pcie-root-port"
    DMI_TO_PCI_BRIDGE = "dmi-to-pci-bridge"
    PCIE_TO_PCI_BRIDGE = "pcie-to-pci-bridge"
    PCIE_SWITCH_UPSTREAM_PORT = "pcie-switch-upstream-port"
    PCIE_SWITCH_DOWNSTREAM_PORT = "pcie-switch-downstream-port"
    PCI_EXPANDER_BUS = "pci-expander-bus"
    PCIE_EXPANDER_BUS = "pcie-expander-bus"

    @property
    def is_root(self) -> bool:
        """True for the root bus models, which only exist at index 0."""
        return self in (ControllerModel.PCI_ROOT, ControllerModel.PCIE_ROOT)


class SerialType(StrEnum):
    """``<serial type=…>``: the host side of a serial port."""

    FILE = "file"
    PTY = "pty"
    UNIX = "unix"
    NULL = "null"


class DiskType(StrEnum):
    """``<disk type=…>``: where the image lives on the host."""

    FILE = "file"
    BLOCK = "block"


class DiskDevice(StrEnum):
    """``<disk device=…>``: what the guest sees."""

    DISK = "disk"
    CDROM = "cdrom"


class DiskBus(StrEnum):
    """``<target bus=…>`` of a disk: the guest controller it hangs on."""

    VIRTIO = "virtio"
    SATA = "sata"
    SCSI = "scsi"


class DiskFormat(StrEnum):
    """``<driver type=…>`` of a disk: the image format."""

    RAW = "raw"
    QCOW2 = "qcow2"


class DiskControllerType(StrEnum):
    """``<controller type=…>`` of a controller that disks hang on."""

    SATA = "sata"
    SCSI = "scsi"


class InterfaceType(StrEnum):
    """``<interface type=…>``: how a NIC reaches the host."""

    USER = "user"
    ETHERNET = "ethernet"
    BRIDGE = "bridge"
    NETWORK = "network"
    HOSTDEV = "hostdev"


class NetDriverName(StrEnum):
    """``<driver name=…>`` of an interface: QEMU's userspace backend, vhost-net, or VFIO."""

    QEMU = "qemu"
    VHOST = "vhost"
    VFIO = "vfio"


class TeamingType(StrEnum):
    """``<teaming type=…>``: the two halves of a virtio failover pair."""

    PERSISTENT = "persistent"
    TRANSIENT = "transient"


class LinkState(StrEnum):
    """``<link state=…>``."""

    UP = "up"
    DOWN = "down"


class ForwardMode(StrEnum):
    """``<forward mode=…>`` of a network pool: the modes qctl implements."""

    BRIDGE = "bridge"
    HOSTDEV = "hostdev"


VIRTIO_MODELS = frozenset({"virtio", "virtio-transitional", "virtio-non-transitional"})
"""Interface ``<model type>`` values that mean a virtio-net device."""

#: libvirt's known NIC models (``virDomainNetModel``), matched case-insensitively as libvirt
#: matches them and stored in this spelling; other model names are passed on as written.
KNOWN_MODELS = (
    "virtio", "virtio-transitional", "virtio-non-transitional", "e1000", "e1000e", "igb",
    "rtl8139", "netfront", "usb-net", "spapr-vlan", "lan9118", "smc91c111", "vlance",
    "vmxnet", "vmxnet2", "vmxnet3", "Am79C970A", "Am79C973", "82540EM", "82545EM", "82543GC",
)  # fmt: skip
_MODEL_SPELLING = {model.lower(): model for model in KNOWN_MODELS}


def canonical_model(model: str) -> str:
    """A ``<model type>`` as libvirt understands it: a known model in its own spelling
    (``VIRTIO`` is ``virtio``), any other name unchanged."""
    return _MODEL_SPELLING.get(model.lower(), model)


FAILOVER_STANDIN_MODELS = frozenset({"e1000e", "igb"})
"""Emulated PCIe NIC models allowed as the transient half of a failover pair: a testing
stand-in for the SR-IOV VF, so failover and its migration run on hosts without one."""

# Bytes per unit; names compared case-insensitively, as libvirt does.
_MEMORY_UNITS: dict[str, int] = {
    "b": 1,
    "bytes": 1,
    "kb": 1000,
    "k": 1024,
    "kib": 1024,
    "mb": 1000**2,
    "m": 1024**2,
    "mib": 1024**2,
    "gb": 1000**3,
    "g": 1024**3,
    "gib": 1024**3,
    "tb": 1000**4,
    "t": 1024**4,
    "tib": 1024**4,
}


@record(kw_only=True)
class RawXML:
    """A piece of XML the model does not know (an element or a comment), kept verbatim.

    ``tag`` is the element name (``{uri}local`` when namespaced) or ``#comment``/``#pi``;
    ``after`` names the known sibling element it followed (``None``: before all of them).
    Inside ``<devices>`` the order of :attr:`DevicesDef.items` already says where it goes.
    """

    xml: str
    tag: str
    after: str | None = None
    line: int | None = field(default=None, compare=False, repr=False)


@record(kw_only=True)
class ElementDef:
    """What every definition of an XML element carries besides its own fields: the unknown
    parts kept for the round trip, and where it came from."""

    extra_attrs: tuple[Attr, ...] = ()
    child_attrs: tuple[ChildAttr, ...] = ()
    extra: tuple[RawXML, ...] = ()
    line: int | None = field(default=None, compare=False, repr=False)
    child_lines: tuple[tuple[str, int], ...] = field(default=(), compare=False, repr=False)

    def line_of(self, child: str) -> int | None:
        """The line of a child element (``"mac"``, ``"driver"``, ``"source/address"``), or
        of this element when that is not known."""
        return next((line for path, line in self.child_lines if path == child), self.line)


@record
class MemoryDef:
    """``<memory unit=…>N</memory>``: the amount as written, and its size in KiB.

    ``unit`` is ``None`` when the document gave none (libvirt then means KiB).
    """

    value: int
    unit: str | None = None

    def __post_init__(self) -> None:
        if self.value < 0:
            raise ValueError(f"memory {self.value} is negative")
        if self.unit is not None and self.unit.lower() not in _MEMORY_UNITS:
            raise ValueError(
                f"unknown memory unit {self.unit!r} "
                "(expected b, bytes, KB, k, KiB, MB, M, MiB, GB, G, GiB, TB, T or TiB)"
            )

    @property
    def kib(self) -> int:
        """The size in KiB, rounded up like libvirt rounds byte amounts."""
        scale = _MEMORY_UNITS[self.unit.lower()] if self.unit is not None else 1024
        return -(-self.value * scale // 1024)


@record
class VCPUDef:
    """``<vcpu current=…>N</vcpu>``: the maximum vCPU count and how many start online."""

    count: int
    current: int | None = None


@record
class USBAddress:
    """A host USB device by position: ``<address type='usb' bus=… device=…/>``."""

    bus: int
    device: int

    def __post_init__(self) -> None:
        if self.bus < 0 or self.device < 0:
            raise ValueError(f"USB bus {self.bus} device {self.device} must not be negative")

    def __str__(self) -> str:
        return f"{self.bus:03d}:{self.device:03d}"


@record(kw_only=True)
class OSDef(ElementDef):
    """``<os>``: ``<type arch machine>hvm</type>`` and direct kernel boot."""

    type: str = "hvm"
    arch: str | None = None
    machine: str | None = None
    kernel: str | None = None
    initrd: str | None = None
    cmdline: str | None = None


@record(kw_only=True)
class ControllerDef(ElementDef):
    """``<controller type='pci' index=… model=…>`` with its guest address and alias."""

    index: int
    model: ControllerModel
    alias: str | None = None
    address: PCIAddress | None = None


@record
class DriveAddress:
    """``<address type='drive' controller bus target unit/>``: a disk's place on its
    controller."""

    controller: int = 0
    bus: int = 0
    target: int = 0
    unit: int = 0


@record(kw_only=True)
class DiskControllerDef(ElementDef):
    """``<controller type='sata|scsi' index=… model=…>``: a controller that disks hang on.

    ``model`` is libvirt's (``virtio-scsi``); ``None`` leaves the choice to the driver.
    """

    type: DiskControllerType
    index: int
    model: str | None = None
    alias: str | None = None
    address: PCIAddress | None = None


@record(kw_only=True)
class SerialDef(ElementDef):
    """``<serial type='file|pty|unix|null'>``.

    ``source_path`` is the file, the socket, or (in a live definition) the pty QEMU opened;
    ``source_mode`` is a unix socket's ``mode`` (``bind``: QEMU listens, ``connect``).
    """

    type: SerialType
    source_path: str | None = None
    source_mode: str | None = None
    alias: str | None = None


@record(kw_only=True)
class DiskDef(ElementDef):
    """``<disk type='file|block' device='disk|cdrom'>``: one guest disk.

    ``source`` is ``<source file>`` (type file) or ``<source dev>`` (type block), ``None``
    for an empty CD-ROM drive. ``driver_name`` is ``<driver name>`` (only ``qemu``);
    ``format`` is ``<driver type>``. ``target_bus`` ``None`` means the bus the target name
    implies (``vd…`` virtio, ``sd…`` scsi). ``address`` is the guest PCI address of a
    virtio disk, ``drive`` the place of a sata or scsi disk on its controller.
    """

    type: DiskType
    device: DiskDevice = DiskDevice.DISK
    driver_name: str | None = None
    format: DiskFormat | None = None
    source: str | None = None
    target_dev: str
    target_bus: DiskBus | None = None
    readonly: bool = False
    serial: str | None = None
    boot_order: int | None = None
    alias: str | None = None
    address: PCIAddress | None = None
    drive: DriveAddress | None = None

    @property
    def bus(self) -> DiskBus | None:
        """``target_bus``, or the bus the target name implies (``vd…`` virtio, ``sd…``
        scsi, as libvirt infers it); ``None`` when neither says."""
        if self.target_bus is not None:
            return self.target_bus
        if self.target_dev.startswith("vd"):
            return DiskBus.VIRTIO
        if self.target_dev.startswith("sd"):
            return DiskBus.SCSI
        return None


@record(kw_only=True)
class InterfaceDriverDef(ElementDef):
    """``<driver name queues rx_queue_size tx_queue_size>`` of an interface."""

    name: NetDriverName | None = None
    queues: int | None = None
    rx_queue_size: int | None = None
    tx_queue_size: int | None = None


@record(kw_only=True)
class InterfaceSourceDef(ElementDef):
    """``<source>`` of an interface: a bridge, a network pool, or the host device to pass.

    A hostdev interface names a PCI function (``pci``) or a USB device by position
    (``usb``) and/or by ``vendor``/``product`` id.
    """

    bridge: IfName | None = None
    network: str | None = None
    pci: PCIAddress | None = None
    usb: USBAddress | None = None
    vendor: int | None = None
    product: int | None = None


@record(kw_only=True)
class TeamingDef:
    """``<teaming type persistent>``: virtio failover; ``persistent`` names the virtio alias."""

    type: TeamingType
    persistent: str | None = None


@record(kw_only=True)
class VLANTagDef:
    """``<tag id nativeMode>`` of a ``<vlan>``."""

    id: int
    native_mode: str | None = None


@record(kw_only=True)
class VLANDef(ElementDef):
    """``<vlan trunk>``: the VLAN tags of an interface or a network pool.

    qctl applies one untagged-access tag on an SR-IOV VF (set through the PF); trunks and
    native modes are refused by validation (a VF takes one tag).
    """

    tags: tuple[VLANTagDef, ...] = ()
    trunk: bool | None = None


@record(kw_only=True)
class InterfaceDef(ElementDef):
    """``<interface type=…>``: one guest NIC.

    ``managed`` is the hostdev interface's own ``managed=`` (bind the device to VFIO and
    back); ``target_managed`` is ``<target managed>`` (qctl creates the tap itself).
    """

    type: InterfaceType
    mac: MACAddress | None = None
    source: InterfaceSourceDef | None = None
    target_dev: IfName | None = None
    target_managed: bool | None = None
    model: str | None = None
    driver: InterfaceDriverDef | None = None
    teaming: TeamingDef | None = None
    link_state: LinkState | None = None
    mtu: int | None = None
    boot_order: int | None = None
    alias: str | None = None
    address: PCIAddress | None = None
    managed: bool | None = None
    vlan: VLANDef | None = None
    #: ``<address type='pci'/>`` with no attributes: "place it", kept for ``format``
    auto_address: bool = False

    @property
    def is_virtio(self) -> bool:
        """True when the guest sees a virtio-net device."""
        return self.model is not None and canonical_model(self.model) in VIRTIO_MODELS

    @property
    def is_usb(self) -> bool:
        """True for a ``usb-net`` NIC, which sits on the guest's USB bus, not on PCI."""
        return self.model is not None and canonical_model(self.model) == "usb-net"

    @property
    def is_failover_standin(self) -> bool:
        """True for an emulated NIC standing in for a VF as a failover pair's transient half."""
        return (
            self.type is not InterfaceType.HOSTDEV
            and self.model in FAILOVER_STANDIN_MODELS
            and self.teaming is not None
            and self.teaming.type is TeamingType.TRANSIENT
        )


@record(kw_only=True)
class HostdevDef(ElementDef):
    """``<hostdev mode='subsystem' type='pci' managed=…>``: a host PCI function passed through.

    ``source`` is the host address; ``address`` the guest address. ``unassigned`` is
    ``<address type='unassigned'/>``: the device is prepared (bound to VFIO, held) but not
    given to the guest. ``teaming`` is a transient failover half, as on an interface.
    """

    source: PCIAddress
    managed: bool | None = None
    boot_order: int | None = None
    alias: str | None = None
    address: PCIAddress | None = None
    teaming: TeamingDef | None = None
    unassigned: bool = False
    #: ``<address type='pci'/>`` with no attributes: "place it", kept for ``format``
    auto_address: bool = False
    #: ``<driver name=…>``: ``vfio`` (what qctl does anyway) or a backend qctl refuses
    driver_name: str | None = None


DeviceDef = ControllerDef | DiskControllerDef | SerialDef | DiskDef | InterfaceDef | HostdevDef
"""A device the model knows."""

_DEVICE_TAGS: dict[type, str] = {
    ControllerDef: "controller",
    DiskControllerDef: "controller",
    DiskDef: "disk",
    SerialDef: "serial",
    InterfaceDef: "interface",
    HostdevDef: "hostdev",
}


def device_tag(item: DeviceDef | RawXML) -> str:
    """The XML element name of a device or raw fragment (used to build element paths)."""
    return item.tag if isinstance(item, RawXML) else _DEVICE_TAGS[type(item)]


@record(kw_only=True)
class DevicesDef(ElementDef):
    """``<devices>``: the emulator, then every device in document order, known or not."""

    emulator: str | None = None
    items: tuple[DeviceDef | RawXML, ...] = ()


@record(kw_only=True)
class DomainDef(ElementDef):
    """``<domain type=…>``: one virtual machine.

    ``namespaces`` are the ``xmlns:prefix`` declarations of the root element, kept so
    namespaced extensions (``<qemu:commandline>``, metadata) keep their prefixes.
    """

    type: DomainType
    name: str
    memory: MemoryDef
    os: OSDef
    uuid: UUID | None = None
    vcpu: VCPUDef | None = None
    devices: DevicesDef = DevicesDef()
    namespaces: tuple[tuple[str, str], ...] = ()
    #: the file it was read from, so errors found later (planning, start) can name it
    source: str | None = field(default=None, compare=False, repr=False)

    @property
    def interfaces(self) -> tuple[InterfaceDef, ...]:
        """The interfaces, in document order."""
        return tuple(d for d in self.devices.items if isinstance(d, InterfaceDef))

    @property
    def hostdevs(self) -> tuple[HostdevDef, ...]:
        """The PCI host devices, in document order."""
        return tuple(d for d in self.devices.items if isinstance(d, HostdevDef))

    @property
    def controllers(self) -> tuple[ControllerDef, ...]:
        """The PCI controllers, in document order."""
        return tuple(d for d in self.devices.items if isinstance(d, ControllerDef))

    @property
    def disks(self) -> tuple[DiskDef, ...]:
        """The disks, in document order."""
        return tuple(d for d in self.devices.items if isinstance(d, DiskDef))

    @property
    def disk_controllers(self) -> tuple[DiskControllerDef, ...]:
        """The SATA and SCSI controllers, in document order."""
        return tuple(d for d in self.devices.items if isinstance(d, DiskControllerDef))

    @property
    def serials(self) -> tuple[SerialDef, ...]:
        """The serial ports, in document order."""
        return tuple(d for d in self.devices.items if isinstance(d, SerialDef))


@record(kw_only=True)
class ForwardDef(ElementDef):
    """``<forward mode=…>`` of a pool: a bridge, or a set of host devices to hand out.

    In hostdev mode the devices are the VFs of one physical function (``pf``) or an explicit
    list of PCI ``addresses``.
    """

    mode: ForwardMode
    managed: bool | None = None
    pf: IfName | None = None
    addresses: tuple[PCIAddress, ...] = ()


@record(kw_only=True)
class NetworkDef(ElementDef):
    """``<network>``: a named pool that ``<interface type='network'>`` draws from."""

    name: str
    forward: ForwardDef | None = None
    bridge: IfName | None = None
    uuid: UUID | None = None
    vlan: VLANDef | None = None


_USER_ALIAS_RE = re.compile(r"ua-[A-Za-z0-9_-]+")
# What QEMU accepts as a device id; qctl's own aliases (net0, hostdev1) are of this kind.
_DEVICE_ID_RE = re.compile(r"[A-Za-z][A-Za-z0-9_.-]*")


def is_user_alias(alias: str) -> bool:
    """True when ``alias`` is a valid user alias: ``ua-`` then letters, digits, ``_`` or ``-``."""
    return _USER_ALIAS_RE.fullmatch(alias) is not None


def is_device_id(alias: str) -> bool:
    """True when ``alias`` would be accepted by QEMU as a device id."""
    return _DEVICE_ID_RE.fullmatch(alias) is not None
