"""The rules a definition must follow, checked on definitions (not on XML).

Working on ``*Def`` objects lets the driver check a device built in code, or read from an
``<interface>`` document, against a live :class:`~qctl.conf.model.DomainDef` before hot-plugging
it: :func:`validate_device` with ``domain=``. Each problem is a
:class:`~qctl.errors.ValidationError` carrying the source, the line (when the definition came
from a document) and the element path, e.g. ``/domain/devices/interface[2]/mac``.

The rules follow libvirt's (``ua-`` aliases, failover teaming, queue sizes, what a hostdev
interface may not carry, one host device assigned once), plus one libvirt misses: a transient
teaming device's ``persistent=`` must name a virtio interface with persistent teaming in the
same domain. What libvirt accepts but qctl doubts (two NICs with one MAC, a ``<model>`` on a
hostdev interface) is a warning, not an error.

Parts of an ``<interface>`` or ``<hostdev>`` that qctl would not apply
(:mod:`qctl.conf.support`) are errors, or warnings when ``lenient``: never silently ignored.
:func:`review_domain` and :func:`review_device` give errors and warnings together; the
``validate_*`` functions give the errors.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import field

from qctl.conf.model import (
    FAILOVER_STANDIN_MODELS,
    ControllerDef,
    DeviceDef,
    DiskBus,
    DiskControllerDef,
    DiskControllerType,
    DiskDef,
    DiskDevice,
    DomainDef,
    ForwardMode,
    HostdevDef,
    InterfaceDef,
    InterfaceType,
    NetDriverName,
    NetworkDef,
    RawXML,
    SerialDef,
    SerialType,
    TeamingType,
    device_tag,
    is_device_id,
    is_user_alias,
)
from qctl.conf.support import unsupported_parts
from qctl.conf.xml import read_xml
from qctl.errors import ConfigError, ValidationError
from qctl.record import record
from qctl.types import OBJECT_NAME_RULE, PCIAddress, is_object_name

__all__ = [
    "CREATED_DEVICES",
    "Review",
    "missing_images",
    "not_created",
    "review_device",
    "review_domain",
    "review_network",
    "validate_device",
    "validate_domain",
    "validate_network",
]

CREATED_DEVICES = (
    "<controller type='pci'> (pci-root, pcie-root, pcie-root-port, pci-bridge), "
    "<controller type='sata|scsi'>, <disk type='file|block' device='disk|cdrom'>, "
    "<serial type='pty|file|unix|null'>, <interface>, <hostdev type='pci'>"
)
"""The devices a start gives QEMU: the model's devices (see :func:`not_created`)."""

# Raw device elements that ask QEMU for nothing, so leaving them out loses nothing:
# (tag, attribute, value) — the attribute must have that value (None: must be absent).
_NOTHING_TO_CREATE: tuple[tuple[str, str, str | None], ...] = (
    ("memballoon", "model", "none"),
    ("controller", "model", "none"),  # <controller type='usb' model='none'/>
)

MAX_QUEUES = 256
QUEUE_SIZES = (256, 512, 1024)


def _in_line_order(found: list[ValidationError]) -> list[ValidationError]:
    return sorted(found, key=lambda problem: (problem.line is None, problem.line or 0))


@record(frozen=False)
class Review:
    """What is wrong with a definition (``errors``) and what is doubtful (``warnings``),
    each in line order."""

    errors: list[ValidationError] = field(default_factory=list)
    warnings: list[ValidationError] = field(default_factory=list)


class _Problems:
    """Collects the problems of one definition."""

    def __init__(self, source: str | None, *, lenient: bool = False) -> None:
        self.source = source
        self.lenient = lenient
        self.found: list[ValidationError] = []
        self.warned: list[ValidationError] = []

    def add(self, path: str, line: int | None, message: str) -> None:
        self.found.append(ValidationError(message, source=self.source, line=line, path=path))

    def warn(self, path: str, line: int | None, message: str) -> None:
        self.warned.append(ValidationError(message, source=self.source, line=line, path=path))

    def unsupported(self, path: str, line: int | None, message: str) -> None:
        """A part qctl would not apply: an error, or a warning when lenient."""
        (self.warn if self.lenient else self.add)(path, line, message)

    def in_line_order(self) -> list[ValidationError]:
        return _in_line_order(self.found)

    def review(self) -> Review:
        return Review(_in_line_order(self.found), _in_line_order(self.warned))


def _placed(domain: DomainDef) -> list[tuple[DeviceDef, str]]:
    """Every known device of ``domain`` with its element path (counting raw siblings too)."""
    counts: Counter[str] = Counter()
    placed: list[tuple[DeviceDef, str]] = []
    for item in domain.devices.items:
        tag = device_tag(item)
        counts[tag] += 1
        if not isinstance(item, RawXML):
            placed.append((item, f"/domain/devices/{tag}[{counts[tag]}]"))
    return placed


def _address(device: DeviceDef) -> PCIAddress | None:
    return None if isinstance(device, SerialDef) else device.address


def _boot_order(device: DeviceDef) -> int | None:
    return device.boot_order if isinstance(device, InterfaceDef | HostdevDef | DiskDef) else None


# -- one device ---------------------------------------------------------------------------


def _check_alias(device: DeviceDef, path: str, live: bool, problems: _Problems) -> None:
    alias = device.alias
    if alias is None:
        return
    if alias.startswith("ua-") or not live:
        if not is_user_alias(alias):
            problems.add(
                f"{path}/alias",
                device.line_of("alias"),
                f"alias {alias!r} must be 'ua-' followed by letters, digits, '_' or '-'",
            )
    elif not is_device_id(alias):
        problems.add(
            f"{path}/alias",
            device.line_of("alias"),
            f"alias {alias!r} is not a valid device id (a letter, then letters, digits, "
            "'_', '.' or '-')",
        )


def _check_hostdev_interface(iface: InterfaceDef, path: str, problems: _Problems) -> None:
    """What a passed-through NIC cannot have: everything that configures QEMU's or the
    host's side of an emulated NIC."""

    def forbid(what: str, where: str) -> None:
        problems.add(
            f"{path}/{where}", iface.line_of(where), f"{what} is not allowed on a hostdev interface"
        )

    if iface.model is not None:
        problems.warn(
            f"{path}/model",
            iface.line_of("model"),
            f"<model type={iface.model!r}> has no effect on a hostdev interface (the guest "
            "sees the host device itself)",
        )
    driver = iface.driver
    if driver is not None:
        if driver.name is not None and driver.name is not NetDriverName.VFIO:
            forbid(f"driver name={driver.name.value!r}", "driver")
        for name, value in (
            ("queues", driver.queues),
            ("rx_queue_size", driver.rx_queue_size),
            ("tx_queue_size", driver.tx_queue_size),
        ):
            if value is not None:
                forbid(f"driver {name}=", "driver")
    source = iface.source
    where, line = f"{path}/source", iface.line_of("source")
    if source is None or (
        source.pci is None
        and source.usb is None
        and source.vendor is None
        and source.product is None
    ):
        problems.add(
            where,
            line if source is None else source.line,
            "a hostdev interface needs a <source> with a PCI <address>, a USB "
            "<address type='usb'>, or a USB <vendor> and <product>",
        )
        return
    is_usb = source.usb is not None or source.vendor is not None or source.product is not None
    if source.pci is not None and is_usb:
        problems.add(
            where, source.line, "a hostdev source is a PCI address or a USB device, not both"
        )
    if (source.vendor is None) != (source.product is None):
        problems.add(
            where, source.line, "a USB <vendor> id needs a <product> id, and the other way round"
        )


def _check_emulated_interface(iface: InterfaceDef, path: str, problems: _Problems) -> None:
    """Rules for the NICs QEMU emulates (everything but hostdev)."""
    if iface.managed is not None:
        problems.add(path, iface.line, "managed= is only for hostdev interfaces")
    source = iface.source
    if iface.type is InterfaceType.BRIDGE and (source is None or source.bridge is None):
        problems.add(
            f"{path}/source",
            iface.line_of("source"),
            "an interface of type 'bridge' needs <source bridge='…'/>",
        )
    if iface.type is InterfaceType.NETWORK and (source is None or source.network is None):
        problems.add(
            f"{path}/source",
            iface.line_of("source"),
            "an interface of type 'network' needs <source network='…'/>",
        )
    driver = iface.driver
    if driver is None:
        return
    where = f"{path}/driver"
    if driver.name is NetDriverName.VFIO:
        problems.add(where, driver.line, "driver name='vfio' is only for hostdev interfaces")
    if driver.name is NetDriverName.VHOST and not iface.is_virtio:
        problems.add(
            where,
            driver.line,
            f"driver name='vhost' needs a virtio model, not {iface.model or 'none'}",
        )
    if driver.queues is not None and not 1 <= driver.queues <= MAX_QUEUES:
        problems.add(where, driver.line, f"queues {driver.queues} must be from 1 to {MAX_QUEUES}")
    for name, size in (
        ("rx_queue_size", driver.rx_queue_size),
        ("tx_queue_size", driver.tx_queue_size),
    ):
        if size is not None and size not in QUEUE_SIZES:
            problems.add(
                where, driver.line, f"{name} {size} must be a power of two from 256 to 1024"
            )


def _check_teaming(iface: InterfaceDef | HostdevDef, path: str, problems: _Problems) -> None:
    """The rules of one failover half on its own (the pairing needs the domain)."""
    teaming = iface.teaming
    if teaming is None:
        return
    where, line = f"{path}/teaming", iface.line_of("teaming")
    if isinstance(iface, HostdevDef):
        if teaming.type is not TeamingType.TRANSIENT or teaming.persistent is None:
            problems.add(
                where,
                line,
                "a <hostdev> can only be the transient half of a failover pair: "
                "<teaming type='transient' persistent='…'/>",
            )
        return
    if teaming.type is TeamingType.PERSISTENT:
        if teaming.persistent is not None:
            problems.add(
                where, line, "teaming type 'persistent' must not have a persistent= attribute"
            )
        if not iface.is_virtio:
            problems.add(
                where,
                line,
                f"teaming type 'persistent' needs a virtio model, not {iface.model or 'none'}",
            )
    else:
        if teaming.persistent is None:
            problems.add(
                where,
                line,
                "teaming type 'transient' needs persistent= naming the alias of the virtio "
                "interface it backs up",
            )
        if (
            iface.type not in (InterfaceType.HOSTDEV, InterfaceType.NETWORK)
            and not iface.is_failover_standin
        ):
            problems.add(
                where,
                line,
                "teaming type 'transient' needs an interface of type hostdev or network, "
                f"or an emulated PCIe model ({', '.join(sorted(FAILOVER_STANDIN_MODELS))}) "
                f"standing in for a VF in tests; not {iface.type.value} with model "
                f"{iface.model or 'none'}",
            )


def _check_interface(iface: InterfaceDef, path: str, problems: _Problems) -> None:
    mac = iface.mac
    if mac is not None and mac.is_multicast:
        problems.add(
            f"{path}/mac",
            iface.line_of("mac"),
            f"multicast MAC address {mac} is not allowed for a NIC",
        )
    elif mac is not None and not any(mac.octets):
        problems.add(
            f"{path}/mac",
            iface.line_of("mac"),
            f"all-zero MAC address {mac} is not allowed for a NIC",
        )
    if iface.type is InterfaceType.HOSTDEV:
        _check_hostdev_interface(iface, path, problems)
    else:
        _check_emulated_interface(iface, path, problems)
    _check_teaming(iface, path, problems)
    if iface.mtu is not None and iface.mtu < 1:
        problems.add(f"{path}/mtu", iface.line_of("mtu"), f"mtu size {iface.mtu} must be 1 or more")
    if iface.is_usb and iface.address is not None:
        problems.add(
            f"{path}/address",
            iface.line_of("address"),
            "a usb-net NIC sits on the guest's USB bus; it takes no PCI <address>",
        )


def _check_hostdev(hostdev: HostdevDef, path: str, problems: _Problems) -> None:
    _check_teaming(hostdev, path, problems)
    if hostdev.unassigned and (hostdev.address is not None or hostdev.auto_address):
        problems.add(
            f"{path}/address",
            hostdev.line_of("address"),
            "a <hostdev> has one guest <address>: type 'unassigned' or type 'pci', not both",
        )


def _check_disk(disk: DiskDef, path: str, problems: _Problems) -> None:
    """What a disk needs: a known bus, a source unless it is an empty CD-ROM, and nothing
    its bus cannot do."""
    if disk.driver_name not in (None, "qemu"):
        problems.add(
            f"{path}/driver",
            disk.line_of("driver"),
            f"disk driver name {disk.driver_name!r} is not 'qemu'",
        )
    if disk.source is None and disk.device is DiskDevice.DISK:
        attr = "file" if disk.type.value == "file" else "dev"
        problems.add(
            f"{path}/source",
            disk.line_of("source"),
            f"a disk of type {disk.type.value!r} needs <source {attr}='…'/>",
        )
    bus = disk.bus
    where, line = f"{path}/target", disk.line_of("target")
    if bus is None:
        problems.add(
            where,
            line,
            f"disk target {disk.target_dev!r} needs bus='virtio', 'sata' or 'scsi' "
            "(only vd… and sd… names imply one)",
        )
    elif bus is DiskBus.VIRTIO and disk.device is DiskDevice.CDROM:
        problems.add(where, line, "a cdrom cannot be on bus 'virtio' (use sata or scsi)")
    elif bus is DiskBus.SATA and disk.readonly and disk.device is DiskDevice.DISK:
        problems.add(
            f"{path}/readonly", disk.line_of("readonly"), "a sata disk cannot be <readonly/>"
        )
    if disk.address is not None and bus is not DiskBus.VIRTIO:
        problems.add(
            f"{path}/address",
            disk.line_of("address"),
            "only a virtio disk has a PCI address (a sata or scsi disk has type='drive')",
        )
    if disk.drive is not None and bus is DiskBus.VIRTIO:
        problems.add(
            f"{path}/address",
            disk.line_of("address"),
            "a virtio disk has a PCI address, not type='drive'",
        )


def _check_serial(serial: SerialDef, path: str, problems: _Problems) -> None:
    where, line = f"{path}/source", serial.line_of("source")
    if serial.type in (SerialType.FILE, SerialType.UNIX) and not serial.source_path:
        problems.add(
            where, line, f"a serial port of type {serial.type.value!r} needs <source path='…'/>"
        )
    if serial.source_mode is not None and (
        serial.type is not SerialType.UNIX or serial.source_mode not in ("bind", "connect")
    ):
        problems.add(
            where,
            line,
            f"source mode={serial.source_mode!r}: only a unix serial port has a mode, "
            "'bind' or 'connect'",
        )


def _check_device(device: DeviceDef, path: str, live: bool, problems: _Problems) -> None:
    """The rules of one device on its own."""
    _check_alias(device, path, live, problems)
    boot = _boot_order(device)
    if boot is not None and boot < 1:
        problems.add(f"{path}/boot", device.line_of("boot"), f"boot order {boot} must be 1 or more")
    if isinstance(device, InterfaceDef | HostdevDef):
        for part in unsupported_parts(device, path):
            problems.unsupported(part.where, part.line, part.message)
    if isinstance(device, InterfaceDef):
        _check_interface(device, path, problems)
    elif isinstance(device, HostdevDef):
        _check_hostdev(device, path, problems)
    elif isinstance(device, DiskDef):
        _check_disk(device, path, problems)
    elif isinstance(device, SerialDef):
        _check_serial(device, path, problems)


# -- devices together -----------------------------------------------------------------------


def _failover_pair(a: InterfaceDef, b: InterfaceDef) -> bool:
    """True when one of ``a`` and ``b`` is the transient half backing up the other; such a
    pair shares one MAC address, which the guest's failover driver pairs them by."""

    def backs_up(transient: InterfaceDef, persistent: InterfaceDef) -> bool:
        teaming = transient.teaming
        return (
            teaming is not None
            and teaming.type is TeamingType.TRANSIENT
            and teaming.persistent is not None
            and teaming.persistent == persistent.alias
        )

    return backs_up(a, b) or backs_up(b, a)


def _check_against(
    device: DeviceDef,
    path: str,
    others: Iterable[tuple[DeviceDef, str]],
    problems: _Problems,
) -> None:
    """What ``device`` may not share with any of ``others``: MAC, alias, guest PCI address,
    boot order. Each clash is reported once, naming the first device it clashes with.
    (Every hot-plug runs this against the whole domain: what ``device`` has is looked up
    once, and only what it has is compared.)"""
    clashes: dict[str, str] = {}
    mac_clash: str | None = None
    mac = device.mac if isinstance(device, InterfaceDef) else None
    host, alias = _host_device(device), device.alias
    address, boot = _address(device), _boot_order(device)
    for other, other_path in others:
        if (
            mac is not None
            and isinstance(device, InterfaceDef)
            and isinstance(other, InterfaceDef)
            and mac == other.mac
            and not _failover_pair(device, other)
        ):
            mac_clash = mac_clash or f"MAC address {mac} is already used by {other_path}"
        if host is not None and host == _host_device(other):
            clashes.setdefault(
                "source",
                f"host PCI device {host} already exists in the domain: it is assigned by "
                f"{other_path} too",
            )
        if alias is not None and alias == other.alias:
            clashes.setdefault("alias", f"alias {alias!r} is already used by {other_path}")
        if address is not None and address == _address(other):
            clashes.setdefault(
                "address", f"guest PCI address {address} is already used by {other_path}"
            )
        if boot is not None and boot == _boot_order(other):
            clashes.setdefault("boot", f"boot order {boot} is already used by {other_path}")
    for where, message in clashes.items():
        problems.add(f"{path}/{where}", device.line_of(where), message)
    if mac_clash is not None:  # libvirt accepts it, and QEMU runs it; the guest may not like it
        problems.warn(f"{path}/mac", device.line_of("mac"), mac_clash)


def _host_device(device: DeviceDef) -> PCIAddress | None:
    """The host PCI function a device assigns to the guest, if any."""
    if isinstance(device, HostdevDef):
        return device.source
    if isinstance(device, InterfaceDef) and device.type is InterfaceType.HOSTDEV:
        return device.source.pci if device.source is not None else None
    return None


def _check_teaming_peer(
    iface: InterfaceDef | HostdevDef, path: str, domain: DomainDef, problems: _Problems
) -> None:
    """A transient interface's ``persistent=`` must name a virtio interface of ``domain``
    that has persistent teaming (libvirt does not check this), and the pair must not have
    two different MAC addresses."""
    teaming = iface.teaming
    if teaming is None or teaming.type is not TeamingType.TRANSIENT or teaming.persistent is None:
        return
    peer = next(
        (
            other
            for other in domain.interfaces
            if other.alias == teaming.persistent
            and other.is_virtio
            and other.teaming is not None
            and other.teaming.type is TeamingType.PERSISTENT
        ),
        None,
    )
    standin = isinstance(iface, InterfaceDef) and iface.is_failover_standin
    if isinstance(iface, InterfaceDef) and standin and "q35" not in (domain.os.machine or "pc"):
        problems.add(
            f"{path}/model",
            iface.line_of("model"),
            f"the failover stand-in model {iface.model!r} needs a q35 machine: QEMU unplugs "
            "it from a pcie-root-port during migration",
        )
    if peer is None:
        problems.add(
            f"{path}/teaming",
            iface.line_of("teaming"),
            f"teaming persistent={teaming.persistent!r} names no virtio interface with "
            "<teaming type='persistent'/> in this domain",
        )
    elif (
        isinstance(iface, InterfaceDef)
        and iface.mac is not None
        and peer.mac is not None
        and iface.mac != peer.mac
    ):
        problems.add(
            f"{path}/mac",
            iface.line_of("mac"),
            f"MAC address {iface.mac} differs from {peer.mac} of its persistent interface "
            f"{teaming.persistent!r}; a failover pair shares one MAC address",
        )


def _check_disks(placed: list[tuple[DeviceDef, str]], problems: _Problems) -> None:
    """Disk target names and disk controller indexes are unique."""
    targets: dict[str, str] = {}
    controllers: dict[tuple[DiskControllerType, int], str] = {}
    for device, path in placed:
        if isinstance(device, DiskDef):
            if device.target_dev in targets:
                problems.add(
                    f"{path}/target",
                    device.line_of("target"),
                    f"disk target {device.target_dev!r} is already used by "
                    f"{targets[device.target_dev]}",
                )
            targets.setdefault(device.target_dev, path)
        elif isinstance(device, DiskControllerDef):
            key = (device.type, device.index)
            if key in controllers:
                problems.add(
                    path,
                    device.line,
                    f"{device.type.value} controller index {device.index} is already used by "
                    f"{controllers[key]}",
                )
            controllers.setdefault(key, path)


def _check_controllers(placed: list[tuple[DeviceDef, str]], problems: _Problems) -> None:
    """PCI controller indexes are unique, and only the root bus has index 0."""
    seen: dict[int, str] = {}
    for device, path in placed:
        if not isinstance(device, ControllerDef):
            continue
        if device.index in seen:
            problems.add(
                path,
                device.line,
                f"PCI controller index {device.index} is already used by {seen[device.index]}",
            )
        seen.setdefault(device.index, path)
        if device.model.is_root and device.index != 0:
            problems.add(
                path,
                device.line,
                f"a {device.model.value} controller is the root bus and must have index 0",
            )
        elif device.index == 0 and not device.model.is_root:
            problems.add(
                path,
                device.line,
                f"PCI controller index 0 is the root bus (pci-root or pcie-root), "
                f"not {device.model.value}",
            )


def _check_domain_fields(domain: DomainDef, problems: _Problems) -> None:
    name = domain.name
    if not is_object_name(name):
        problems.add(
            "/domain/name",
            domain.line_of("name"),
            f"domain name {name!r} is not usable ({OBJECT_NAME_RULE})",
        )
    if domain.memory.kib < 1:
        problems.add("/domain/memory", domain.line_of("memory"), "memory must be more than 0")
    vcpu = domain.vcpu
    if vcpu is not None:
        if vcpu.count < 1:
            problems.add("/domain/vcpu", domain.line_of("vcpu"), "vcpu count must be 1 or more")
        elif vcpu.current is not None and not 1 <= vcpu.current <= vcpu.count:
            problems.add(
                "/domain/vcpu",
                domain.line_of("vcpu"),
                f"vcpu current={vcpu.current} must be from 1 to the count {vcpu.count}",
            )
    os = domain.os
    if os.type != "hvm":
        problems.add("/domain/os/type", os.line_of("type"), f"OS type {os.type!r} is not 'hvm'")
    for name, value in (("initrd", os.initrd), ("cmdline", os.cmdline)):
        if value is not None and os.kernel is None:
            problems.add(f"/domain/os/{name}", os.line_of(name), f"<{name}> needs a <kernel>")


def review_domain(
    defn: DomainDef, *, source: str | None = None, live: bool = False, lenient: bool = False
) -> Review:
    """Every rule broken by ``defn`` and every doubt about it, in line order.

    ``source`` names the document (default: the file ``defn`` was read from). ``live``
    accepts the aliases qctl assigns itself (``net0``) besides user aliases (``ua-…``).
    ``lenient`` makes parts qctl would not apply warnings instead of errors.
    """
    problems = _Problems(source or defn.source, lenient=lenient)
    _check_domain_fields(defn, problems)
    placed = _placed(defn)
    for i, (device, path) in enumerate(placed):
        _check_device(device, path, live, problems)
        _check_against(device, path, placed[:i], problems)
        if isinstance(device, InterfaceDef | HostdevDef):
            _check_teaming_peer(device, path, defn, problems)
    _check_controllers(placed, problems)
    _check_disks(placed, problems)
    return problems.review()


def validate_domain(
    defn: DomainDef, *, source: str | None = None, live: bool = False, lenient: bool = False
) -> list[ValidationError]:
    """Every rule broken by ``defn``, in line order; empty when it is valid (see
    :func:`review_domain`)."""
    return review_domain(defn, source=source, live=live, lenient=lenient).errors


def review_device(
    device: InterfaceDef | HostdevDef,
    domain: DomainDef | None = None,
    *,
    source: str | None = None,
    live: bool = False,
    lenient: bool = False,
) -> Review:
    """Every rule broken by ``device`` and every doubt about it, alone or as a device of
    ``domain``.

    With ``domain`` (the device is hot-plugged into it), it must not be an unassigned
    ``<hostdev>`` (qctl does not hot-plug those), nor reuse a MAC address (a warning),
    alias, guest PCI address, host device or boot order of the domain's other devices, and
    a transient teaming device must name a persistent virtio interface of the domain.
    Paths are relative to the device itself (``/interface/mac``).
    """
    problems = _Problems(source, lenient=lenient)
    path = f"/{device_tag(device)}"
    _check_device(device, path, live, problems)
    if domain is not None and isinstance(device, HostdevDef) and device.unassigned:
        problems.unsupported(
            f"{path}/address",
            device.line_of("address"),
            "hot-plugging a <hostdev> with <address type='unassigned'/> is not supported by qctl",
        )
    if domain is not None:
        others = [(other, where) for other, where in _placed(domain) if other is not device]
        _check_against(device, path, others, problems)
        _check_teaming_peer(device, path, domain, problems)
    return problems.review()


def _asks_nothing(raw: RawXML, domain: DomainDef) -> bool:
    """True when the raw device is one of :data:`_NOTHING_TO_CREATE`, or a ``<console>``
    that is the first serial port seen again (libvirt's ``<target type='serial'>``)."""
    try:
        node = read_xml(raw.xml)
    except ConfigError:
        return False
    if raw.tag == "console":
        targets = [child for child in node.children() if child.tag == "target"]
        kind = targets[0].attrs.get("type", "serial") if targets else "serial"
        port = targets[0].attrs.get("port", "0") if targets else "0"
        return kind == "serial" and port == "0" and bool(domain.serials)
    return any(
        raw.tag == tag and node.attrs.get(name) == value for tag, name, value in _NOTHING_TO_CREATE
    )


def not_created(defn: DomainDef, *, source: str | None = None) -> list[ValidationError]:
    """The device elements of ``defn`` that a start would not give QEMU, in line order.

    They are kept in the definition (and its live XML) but QEMU would never see them, so a
    start refuses them and ``qctl validate`` warns about them. What is created is
    :data:`CREATED_DEVICES`; elements that ask for nothing (``<memballoon model='none'/>``,
    a ``<console>`` that is the first serial port, as libvirt writes it) are not reported.
    Disks and their controllers are created, but what the model keeps of them without
    applying it (``<driver cache=…>``, ``<iotune>``) is reported the same way.
    """
    problems = _Problems(source)
    counts: Counter[str] = Counter()
    for item in defn.devices.items:
        tag = device_tag(item)
        counts[tag] += 1
        if (
            isinstance(item, RawXML)
            and not item.tag.startswith("#")
            and not _asks_nothing(item, defn)
        ):
            shown = item.xml.split(">", 1)[0].removesuffix("/") + ">"
            problems.add(
                f"/domain/devices/{tag}[{counts[tag]}]",
                item.line,
                f"{shown} is not created by qctl, so QEMU would not get it; remove it "
                "(qctl creates: " + CREATED_DEVICES + ")",
            )
        elif isinstance(item, DiskDef | DiskControllerDef):
            _unapplied(item, f"/domain/devices/{tag}[{counts[tag]}]", problems)
    return problems.in_line_order()


# What libvirt writes into a running domain's disks for its own books; nothing to apply.
_DISK_BOOKKEEPING = {("source", "index")}
_DISK_BOOKKEEPING_ELEMENTS = {"backingStore"}


def _unapplied(device: DiskDef | DiskControllerDef, path: str, problems: _Problems) -> None:
    """The parts of a disk or disk controller qctl keeps but would not apply
    (``<driver cache>``, ``<iotune>``, …)."""
    for name, _ in device.extra_attrs:
        problems.add(path, device.line, f"{name}= is not applied by qctl; remove it")
    for where, name, _ in device.child_attrs:
        if (where, name) not in _DISK_BOOKKEEPING:
            problems.add(
                f"{path}/{where}",
                device.line_of(where),
                f"<{where} {name}=…> is not applied by qctl; remove it",
            )
    for raw in device.extra:
        if raw.tag not in _DISK_BOOKKEEPING_ELEMENTS and not raw.tag.startswith("#"):
            problems.add(
                f"{path}/{raw.tag}", raw.line, f"<{raw.tag}> is not applied by qctl; remove it"
            )


def missing_images(defn: DomainDef, *, source: str | None = None) -> list[ValidationError]:
    """A problem for each disk whose image file or block device does not exist.

    This looks at the host (the rest of this module does not), so it is its own step:
    run before QEMU starts, and by ``qctl validate``.
    """
    problems = _Problems(source)
    for device, path in _placed(defn):
        if isinstance(device, DiskDef) and device.source and not os.path.exists(device.source):
            kind = "image file" if device.type.value == "file" else "block device"
            problems.add(
                f"{path}/source",
                device.line_of("source"),
                f"disk {device.target_dev}: {kind} {device.source!r} does not exist",
            )
    return problems.in_line_order()


def validate_device(
    device: InterfaceDef | HostdevDef,
    domain: DomainDef | None = None,
    *,
    source: str | None = None,
    live: bool = False,
    lenient: bool = False,
) -> list[ValidationError]:
    """Every rule broken by ``device`` (see :func:`review_device`), in line order."""
    return review_device(device, domain, source=source, live=live, lenient=lenient).errors


def validate_network(defn: NetworkDef, *, source: str | None = None) -> list[ValidationError]:
    """Every rule broken by the network pool ``defn``, in line order."""
    return review_network(defn, source=source).errors


def _check_pool_vlan(defn: NetworkDef, problems: _Problems) -> None:
    """A pool's VLAN goes on the VFs it hands out: one tag, hostdev pools only."""
    vlan = defn.vlan
    if vlan is None:
        return
    where = "/network/vlan"
    if defn.forward is None or defn.forward.mode is not ForwardMode.HOSTDEV:
        problems.unsupported(
            where, vlan.line, "<vlan> on a bridge pool is not supported by qctl (only on VFs)"
        )
    elif vlan.trunk or len(vlan.tags) > 1 or any(t.native_mode for t in vlan.tags):
        problems.unsupported(
            where,
            vlan.line,
            "<vlan> with trunk=, nativeMode= or several tags is not supported by qctl "
            "(a VF takes one tag)",
        )


def review_network(defn: NetworkDef, *, source: str | None = None, lenient: bool = False) -> Review:
    """Every rule broken by the network pool ``defn`` and every doubt, in line order."""
    problems = _Problems(source, lenient=lenient)
    _check_network(defn, problems)
    _check_pool_vlan(defn, problems)
    return problems.review()


def _check_network(defn: NetworkDef, problems: _Problems) -> None:
    if not is_object_name(defn.name):
        problems.add(
            "/network/name",
            defn.line_of("name"),
            f"network name {defn.name!r} is not usable ({OBJECT_NAME_RULE})",
        )
    forward = defn.forward
    if forward is None:
        problems.add(
            "/network/forward",
            defn.line,
            "a network pool needs <forward mode='bridge'> or <forward mode='hostdev'>",
        )
        return
    where = "/network/forward"
    if forward.mode is ForwardMode.BRIDGE:
        if defn.bridge is None:
            problems.add(
                "/network/bridge",
                defn.line_of("bridge"),
                "forward mode 'bridge' needs <bridge name='…'/>",
            )
        if forward.pf is not None or forward.addresses:
            problems.add(
                where, forward.line, "forward mode 'bridge' takes no <pf> or <address> elements"
            )
    else:
        if defn.bridge is not None:
            problems.add(
                "/network/bridge",
                defn.line_of("bridge"),
                "forward mode 'hostdev' takes no <bridge>",
            )
        if forward.pf is not None and forward.addresses:
            problems.add(
                where,
                forward.line,
                "forward mode 'hostdev' takes one <pf> or a list of <address> elements, not both",
            )
        elif forward.pf is None and not forward.addresses:
            problems.add(
                where,
                forward.line,
                "forward mode 'hostdev' needs a <pf dev='…'/> or at least one PCI <address>",
            )
        seen: dict[PCIAddress, int] = {}
        for n, address in enumerate(forward.addresses, start=1):
            if address in seen:
                problems.add(
                    f"{where}/address[{n}]",
                    forward.line_of(f"address[{n}]"),
                    f"PCI address {address} is already listed as address[{seen[address]}]",
                )
            seen.setdefault(address, n)
