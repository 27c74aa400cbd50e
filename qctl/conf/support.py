"""What qctl does with each part of an ``<interface>`` and a ``<hostdev>``: one table.

qctl keeps every part of a document it reads (so ``format`` passes it through), but it only
*applies* the parts listed as applied below. Anything else inside an ``<interface>`` or a
``<hostdev>`` — an element or attribute qctl does not know, or a known one that has no effect
on this kind of device — would silently give the guest less than the document asks for. So it
is refused: ``start`` and ``attach-device`` fail, and ``validate`` reports it (as a warning
with ``--lenient``), naming the element, its line and "not supported by qctl".

:data:`INTERFACE_PARTS` and :data:`HOSTDEV_PARTS` say, per element and attribute, what is
applied; :data:`REFUSED_PARTS` names the refused parts real libvirt XML often carries, with
the reason (the README's table is made from these). Whatever is in neither is refused too.
:func:`unsupported_parts` finds them in a definition.
"""

from __future__ import annotations

from collections.abc import Iterator

from qctl.conf.model import (
    ElementDef,
    HostdevDef,
    InterfaceDef,
    InterfaceType,
    RawXML,
    VLANDef,
)
from qctl.record import record

__all__ = [
    "HOSTDEV_PARTS",
    "INTERFACE_PARTS",
    "REFUSED_PARTS",
    "Unsupported",
    "unsupported_parts",
]

INTERFACE_PARTS: dict[str, str] = {
    "interface type=": "user, ethernet, bridge, network (bridge or hostdev pool), hostdev",
    "interface managed=": "hostdev: bind the device to vfio-pci and back",
    "mac address=": "the guest's MAC (and the VF's admin MAC of a hostdev interface)",
    "source bridge=": "type bridge: the bridge the tap joins",
    "source network=": "type network: the pool",
    "source/address": "type hostdev: the host PCI function",
    "source/vendor, source/product": "parsed; a USB hostdev interface is refused at start",
    "target dev=": "the tap's name (not on hostdev)",
    "target managed=": "yes only: qctl creates the tap",
    "model type=": "the QEMU device (case-insensitive for libvirt's models); usb-net on USB",
    "driver name=": "qemu or vhost (virtio), vfio (hostdev)",
    "driver queues=": "virtio multiqueue",
    "driver rx_queue_size=, tx_queue_size=": "virtio",
    "teaming type=, persistent=": "virtio failover / failover_pair_id",
    "vlan/tag id=": "hostdev or hostdev pool (an SR-IOV VF): the VF's VLAN, set via the PF",
    "link state=": "set_link before the guest runs (not on hostdev)",
    "mtu size=": "the tap's MTU, virtio host_mtu (not on hostdev)",
    "boot order=": "bootindex",
    "alias name=": "the QEMU device id",
    "address type='pci'": "the guest PCI address; empty means 'assign one'",
}
"""Parts of an ``<interface>`` qctl applies, and how."""

HOSTDEV_PARTS: dict[str, str] = {
    "hostdev mode='subsystem' type='pci'": "a host PCI function given to the guest by VFIO",
    "hostdev managed=": "bind the device to vfio-pci and back",
    "source/address": "the host PCI function",
    "driver name='vfio'": "the only backend",
    "boot order=": "bootindex",
    "alias name=": "the QEMU device id",
    "teaming type='transient' persistent=": "failover_pair_id",
    "address type='pci'": "the guest PCI address; empty means 'assign one'",
    "address type='unassigned'": "prepared and held, not given to the guest",
}
"""Parts of a ``<hostdev>`` qctl applies, and how."""

REFUSED_PARTS: dict[str, str] = {
    "virtualport": "Open vSwitch / 802.1Qbh port profiles are not set up",
    "bandwidth": "no tc shaping of the tap",
    "filterref": "no nwfilter rules",
    "tune": "no sndbuf tuning",
    "coalesce": "no rx coalescing",
    "rom": "the option ROM is left as QEMU has it",
    "backend": "no custom tap or vhost device paths",
    "port": "no port isolation",
    "portForward": "no passt port forwarding",
    "ip, route": "no addresses configured on the host side",
    "guest": "no guest-side interface name",
    "script, downscript": "no scripts are run",
    "acpi": "no ACPI index",
    "driver csum=, gso=, tso4=, tso6=, ecn=, ufo=, mrg_rxbuf=": "offloads are left to QEMU",
    "driver rss=, rss_hash_report=, txmode=, ioeventfd=, event_idx=": "not passed to QEMU",
    "driver iommu=, ats=, packed=, page_per_vq=": "virtio options are not passed to QEMU",
    "driver/host, driver/guest": "per-side offload settings are not passed to QEMU",
    "interface trustGuestRxFilters=": "RX-filter changes are not mirrored to the host",
    "target managed='no'": "qctl always creates its own tap",
    "vlan trunk=, tag nativeMode=, several tags": "a VF takes one tag",
    "vlan on a tap interface": "only VFs get a VLAN (on a bridge pool: refused at start)",
    "link, mtu, target on a hostdev interface": "a passed-through NIC has no host side",
    "driver queues=, rx_queue_size=, tx_queue_size= on a non-virtio model": "virtio only",
    "address of another type (ccw, usb, isa, …)": "only PCI guest addresses are placed",
    "any other element or attribute": "unknown to qctl",
}
"""Refused parts commonly found in libvirt XML, and why (besides anything unknown)."""

_IGNORABLE = ("#comment", "#pi")
_VIRTIO_ONLY_DRIVER = ("queues", "rx_queue_size", "tx_queue_size")


@record
class Unsupported:
    """One refused part: where (relative element path and line) and what."""

    where: str
    line: int | None
    what: str

    @property
    def message(self) -> str:
        """``<what> is not supported by qctl``."""
        return f"{self.what} is not supported by qctl"


def _child_tag(path: str) -> str:
    return path.rsplit("/", 1)[-1].split("[", 1)[0]


def _unknown(defn: ElementDef, tag: str, where: str) -> Iterator[Unsupported]:
    """The parts of ``defn`` (element ``tag`` at ``where``) the model did not know."""
    for name, _ in defn.extra_attrs:
        yield Unsupported(where, defn.line, f"<{tag} {name}=…>")
    for path, name, _ in defn.child_attrs:
        yield Unsupported(f"{where}/{path}", defn.line_of(path), f"<{_child_tag(path)} {name}=…>")
    for raw in defn.extra:
        if raw.tag not in _IGNORABLE:
            yield Unsupported(f"{where}/{raw.tag}", raw.line or defn.line, _raw_what(raw))


def _raw_what(raw: RawXML) -> str:
    if raw.tag == "address":
        return "<address> of this type"
    return f"<{raw.tag}>"


def _vlan_parts(vlan: VLANDef, where: str, hostdev: bool) -> Iterator[Unsupported]:
    yield from _unknown(vlan, "vlan", where)
    if not hostdev:
        yield Unsupported(where, vlan.line, "<vlan> on an interface with a tap (only SR-IOV VFs)")
        return
    if vlan.trunk:
        yield Unsupported(where, vlan.line, "<vlan trunk='yes'> (a VF takes one tag)")
    if len(vlan.tags) > 1:
        yield Unsupported(where, vlan.line, "<vlan> with several tags (a VF takes one)")
    for n, tag in enumerate(vlan.tags, start=1):
        if tag.native_mode is not None:
            yield Unsupported(
                f"{where}/tag[{n}]",
                vlan.line_of(f"tag[{n}]"),
                f"<tag nativeMode={tag.native_mode!r}> (a VF takes one untagged tag)",
            )


def _interface_parts(iface: InterfaceDef, where: str) -> Iterator[Unsupported]:
    yield from _unknown(iface, "interface", where)
    hostdev = iface.type is InterfaceType.HOSTDEV
    source = iface.source
    if source is not None:
        yield from _unknown(source, "source", f"{where}/source")
        line = source.line
        if source.bridge is not None and iface.type is not InterfaceType.BRIDGE:
            yield Unsupported(f"{where}/source", line, f"<source bridge=…> on a {iface.type} NIC")
        if source.network is not None and iface.type is not InterfaceType.NETWORK:
            yield Unsupported(f"{where}/source", line, f"<source network=…> on a {iface.type} NIC")
        device_source = source.pci, source.usb, source.vendor, source.product
        if not hostdev and any(part is not None for part in device_source):
            yield Unsupported(
                f"{where}/source", line, f"a host device source on a {iface.type} NIC"
            )
    driver = iface.driver
    if driver is not None:
        yield from _unknown(driver, "driver", f"{where}/driver")
        if not hostdev and not iface.is_virtio:
            for name in _VIRTIO_ONLY_DRIVER:
                value = getattr(driver, name)
                if value is not None and (name != "queues" or value > 1):
                    yield Unsupported(
                        f"{where}/driver",
                        driver.line,
                        f"<driver {name}=…> on model {iface.model or 'rtl8139'!r} (virtio only)",
                    )
    if iface.vlan is not None:
        # A network interface may be on a hostdev pool; on a bridge pool start refuses it.
        vf = hostdev or iface.type is InterfaceType.NETWORK
        yield from _vlan_parts(iface.vlan, f"{where}/vlan", vf)
    if iface.target_managed is False:
        yield Unsupported(
            f"{where}/target", iface.line_of("target"), "<target managed='no'> (an existing tap)"
        )
    if hostdev:
        for present, tag in (
            (iface.target_dev is not None or iface.target_managed is not None, "target"),
            (iface.link_state is not None, "link"),
            (iface.mtu is not None, "mtu"),
        ):
            if present:
                yield Unsupported(
                    f"{where}/{tag}", iface.line_of(tag), f"<{tag}> on a hostdev interface"
                )


def _hostdev_parts(hostdev: HostdevDef, where: str) -> Iterator[Unsupported]:
    yield from _unknown(hostdev, "hostdev", where)
    if hostdev.driver_name is not None and hostdev.driver_name != "vfio":
        yield Unsupported(
            f"{where}/driver",
            hostdev.line_of("driver"),
            f"<driver name={hostdev.driver_name!r}> (qctl assigns devices with VFIO)",
        )


def unsupported_parts(device: InterfaceDef | HostdevDef, where: str) -> list[Unsupported]:
    """Every part of ``device`` (at element path ``where``) that qctl would not apply."""
    if isinstance(device, InterfaceDef):
        return list(_interface_parts(device, where))
    return list(_hostdev_parts(device, where))
