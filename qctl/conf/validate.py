"""The rules a definition must follow, checked on definitions (not on XML).

Working on ``*Def`` objects lets the driver check a device built in code, or read from an
``<interface>`` document, against a live :class:`~qctl.conf.model.DomainDef` before hot-plugging
it: :func:`validate_device` with ``domain=``. Each problem is a
:class:`~qctl.errors.ValidationError` carrying the source, the line (when the definition came
from a document) and the element path, e.g. ``/domain/devices/interface[2]/mac``.

The rules follow libvirt's (``ua-`` aliases, failover teaming, queue sizes, what a hostdev
interface may not carry), plus one libvirt misses: a transient teaming interface's
``persistent=`` must name a virtio interface with persistent teaming in the same domain.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from qctl.conf.model import (
    FAILOVER_STANDIN_MODELS,
    ControllerDef,
    DeviceDef,
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
from qctl.errors import ValidationError
from qctl.types import PCIAddress

__all__ = ["validate_device", "validate_domain", "validate_network"]

MAX_QUEUES = 256
QUEUE_SIZES = (256, 512, 1024)
# Children of an interface that configure host-side filtering or shaping of a tap, which a
# passed-through device does not have.
_TAP_ONLY_ELEMENTS = ("filterref", "tune", "bandwidth")


class _Problems:
    """Collects the problems of one definition."""

    def __init__(self, source: str | None) -> None:
        self.source = source
        self.found: list[ValidationError] = []

    def add(self, path: str, line: int | None, message: str) -> None:
        self.found.append(ValidationError(message, source=self.source, line=line, path=path))

    def in_line_order(self) -> list[ValidationError]:
        return sorted(self.found, key=lambda problem: (problem.line is None, problem.line or 0))


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
    return device.boot_order if isinstance(device, InterfaceDef | HostdevDef) else None


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
        forbid(f"<model type={iface.model!r}>", "model")
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
    for raw in iface.extra:
        if raw.tag in _TAP_ONLY_ELEMENTS:
            problems.add(
                f"{path}/{raw.tag}", raw.line, f"<{raw.tag}> is not allowed on a hostdev interface"
            )
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


def _check_teaming(iface: InterfaceDef, path: str, problems: _Problems) -> None:
    """The rules of one failover half on its own (the pairing needs the domain)."""
    teaming = iface.teaming
    if teaming is None:
        return
    where, line = f"{path}/teaming", iface.line_of("teaming")
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


def _check_device(device: DeviceDef, path: str, live: bool, problems: _Problems) -> None:
    """The rules of one device on its own."""
    _check_alias(device, path, live, problems)
    boot = _boot_order(device)
    if boot is not None and boot < 1:
        problems.add(f"{path}/boot", device.line_of("boot"), f"boot order {boot} must be 1 or more")
    if isinstance(device, InterfaceDef):
        _check_interface(device, path, problems)
    elif (
        isinstance(device, SerialDef) and device.type is SerialType.FILE and not device.source_path
    ):
        problems.add(
            f"{path}/source",
            device.line_of("source"),
            "a serial port of type 'file' needs <source path='…'/>",
        )


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
    boot order. Each clash is reported once, naming the first device it clashes with."""
    clashes: dict[str, str] = {}
    for other, other_path in others:
        if (
            isinstance(device, InterfaceDef)
            and isinstance(other, InterfaceDef)
            and device.mac is not None
            and device.mac == other.mac
            and not _failover_pair(device, other)
        ):
            clashes.setdefault("mac", f"MAC address {device.mac} is already used by {other_path}")
        if device.alias is not None and device.alias == other.alias:
            clashes.setdefault("alias", f"alias {device.alias!r} is already used by {other_path}")
        address = _address(device)
        if address is not None and address == _address(other):
            clashes.setdefault(
                "address", f"guest PCI address {address} is already used by {other_path}"
            )
        boot = _boot_order(device)
        if boot is not None and boot == _boot_order(other):
            clashes.setdefault("boot", f"boot order {boot} is already used by {other_path}")
    for where, message in clashes.items():
        problems.add(f"{path}/{where}", device.line_of(where), message)


def _check_teaming_peer(
    iface: InterfaceDef, path: str, domain: DomainDef, problems: _Problems
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
    if iface.is_failover_standin and "q35" not in (domain.os.machine or "pc"):
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
    elif iface.mac is not None and peer.mac is not None and iface.mac != peer.mac:
        problems.add(
            f"{path}/mac",
            iface.line_of("mac"),
            f"MAC address {iface.mac} differs from {peer.mac} of its persistent interface "
            f"{teaming.persistent!r}; a failover pair shares one MAC address",
        )


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
    if not name or name != name.strip() or "/" in name or "\n" in name:
        problems.add(
            "/domain/name",
            domain.line_of("name"),
            f"domain name {name!r} must be non-empty, without '/', newlines, or spaces at "
            "either end",
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


def validate_domain(
    defn: DomainDef, *, source: str | None = None, live: bool = False
) -> list[ValidationError]:
    """Every rule broken by ``defn``, in line order; empty when it is valid.

    ``source`` names the document in errors. ``live`` accepts the aliases qctl assigns
    itself (``net0``) besides user aliases (``ua-…``).
    """
    problems = _Problems(source)
    _check_domain_fields(defn, problems)
    placed = _placed(defn)
    for i, (device, path) in enumerate(placed):
        _check_device(device, path, live, problems)
        _check_against(device, path, placed[:i], problems)
        if isinstance(device, InterfaceDef):
            _check_teaming_peer(device, path, defn, problems)
    _check_controllers(placed, problems)
    return problems.in_line_order()


def validate_device(
    device: InterfaceDef | HostdevDef,
    domain: DomainDef | None = None,
    *,
    source: str | None = None,
    live: bool = False,
) -> list[ValidationError]:
    """Every rule broken by ``device``, alone or as a device of ``domain``.

    With ``domain`` (the device to hot-plug and the domain it joins), it must also not reuse
    a MAC address, alias, guest PCI address or boot order of the domain's other devices, and
    a transient teaming interface must name a persistent virtio interface of the domain.
    Paths are relative to the device itself (``/interface/mac``).
    """
    problems = _Problems(source)
    path = f"/{device_tag(device)}"
    _check_device(device, path, live, problems)
    if domain is not None:
        others = [(other, where) for other, where in _placed(domain) if other is not device]
        _check_against(device, path, others, problems)
        if isinstance(device, InterfaceDef):
            _check_teaming_peer(device, path, domain, problems)
    return problems.in_line_order()


def validate_network(defn: NetworkDef, *, source: str | None = None) -> list[ValidationError]:
    """Every rule broken by the network pool ``defn``, in line order."""
    problems = _Problems(source)
    if not defn.name or defn.name != defn.name.strip() or "/" in defn.name:
        problems.add(
            "/network/name",
            defn.line_of("name"),
            f"network name {defn.name!r} must be non-empty, without '/' or spaces at either end",
        )
    forward = defn.forward
    if forward is None:
        problems.add(
            "/network/forward",
            defn.line,
            "a network pool needs <forward mode='bridge'> or <forward mode='hostdev'>",
        )
        return problems.in_line_order()
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
    return problems.in_line_order()
