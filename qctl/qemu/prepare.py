"""The host side of a domain's NICs: taps on bridges, vhost-net fds, and undoing them.

For each interface that needs a tap (ethernet, bridge, network in bridge mode) this creates
the tap (named from ``<target dev>`` or ``vnetN``), gives it the guest's MAC with the first
byte changed, the MTU, the bridge, brings it up, and opens vhost-net when the rules in
:func:`qctl.host.choose_vhost` say so. The live definition records what was really chosen:
``<target dev>`` the tap's name, ``<driver name>`` ``vhost`` or ``qemu`` on virtio NICs.

Everything is pushed on an ``AsyncExitStack`` so the caller can undo it all on a later
failure; the fds are close-on-exec, and the caller hands them to QEMU explicitly.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable
from dataclasses import field

from qctl.conf import (
    DeviceDef,
    DomainDef,
    DomainType,
    InterfaceDef,
    InterfaceDriverDef,
    InterfaceType,
    NetDriverName,
    NetworkDef,
    RawXML,
)
from qctl.errors import ConfigError, StateError, UnsupportedError
from qctl.host import (
    LinkControl,
    Tap,
    TapRequest,
    VhostChoice,
    VhostMode,
    choose_vhost,
    create_tap,
)
from qctl.qemu.plan import located
from qctl.record import record
from qctl.types import IfName

__all__ = [
    "NICPlan",
    "PreparedHost",
    "bridge_of",
    "needs_tap",
    "prepare_interface",
    "prepare_interfaces",
    "record_choice",
    "vhost_mode",
]

NetworkLookup = Callable[[str], NetworkDef]

# Models whose QEMU device uses the virtio-net header on the tap (IFF_VNET_HDR).
_VNET_HDR_MODELS = frozenset({"virtio", "virtio-transitional", "virtio-non-transitional", "e1000e"})


@record(frozen=False)
class NICPlan:
    """What was prepared for one interface: its tap and vhost-net fds, held until QEMU has them."""

    alias: str
    tap: Tap | None = None
    vhost: VhostChoice | None = None

    @property
    def tap_name(self) -> str | None:
        """The tap's name, if the NIC has one."""
        return self.tap.name if self.tap is not None else None

    @property
    def tap_index(self) -> int | None:
        """The tap's ifindex, if the NIC has one."""
        return self.tap.index if self.tap is not None else None

    @property
    def tap_fds(self) -> list[int]:
        """Our copies of the tap's fds, one per queue."""
        return self.tap.fds if self.tap is not None else []

    @property
    def vhost_fds(self) -> list[int]:
        """Our copies of the vhost-net fds (empty without vhost-net)."""
        return list(self.vhost.fds) if self.vhost is not None else []

    @property
    def fds(self) -> list[int]:
        """Every fd QEMU must receive for this NIC, taps first."""
        return [*self.tap_fds, *self.vhost_fds]

    def release_fds(self) -> None:
        """Close our copies once QEMU holds its own; the tap then lives as long as QEMU's."""
        if self.tap is not None:
            self.tap.close_fds()
        if self.vhost is not None:
            self.vhost.close()


@record(frozen=False)
class PreparedHost:
    """The prepared NICs of a domain, by alias, and the live domain recording the choices."""

    domain: DomainDef
    nics: dict[str, NICPlan] = field(default_factory=dict)

    @property
    def fds(self) -> list[int]:
        """Every fd to pass to QEMU."""
        return [fd for nic in self.nics.values() for fd in nic.fds]

    def release_fds(self) -> None:
        """Close our copies of every NIC's fds (after QEMU received them)."""
        for nic in self.nics.values():
            nic.release_fds()


def needs_tap(iface: InterfaceDef) -> bool:
    """True for interfaces backed by a tap qctl creates."""
    return iface.type in (InterfaceType.ETHERNET, InterfaceType.BRIDGE, InterfaceType.NETWORK)


def bridge_of(iface: InterfaceDef, networks: NetworkLookup) -> str | None:
    """The bridge the interface's tap joins: its own, its network's, or none (ethernet)."""
    if iface.type is InterfaceType.BRIDGE:
        if iface.source is None or iface.source.bridge is None:
            raise ConfigError("a bridge interface needs <source bridge=…/>", line=iface.line)
        return str(iface.source.bridge)
    if iface.type is InterfaceType.NETWORK:
        if iface.source is None or iface.source.network is None:
            raise ConfigError("a network interface needs <source network=…/>", line=iface.line)
        network = networks(iface.source.network)
        if network.bridge is None:
            raise UnsupportedError(
                f"network {network.name!r} is a hostdev pool: a device is taken from it "
                "only when the domain starts or the interface is hot-plugged, not in a dry run",
                capability="network-bridge",
            )
        if iface.vlan is not None:
            raise UnsupportedError(
                f"<vlan> on an interface of bridge pool {network.name!r} is not supported by "
                "qctl (only SR-IOV VFs get a VLAN)",
                capability="vf-vlan",
            )
        return str(network.bridge)
    return None


def vhost_mode(iface: InterfaceDef) -> VhostMode | None:
    """``<driver name>`` as the vhost decision takes it (``vfio`` is not a tap backend)."""
    name = iface.driver.name if iface.driver is not None else None
    if name is NetDriverName.VHOST:
        return "vhost"
    if name is NetDriverName.QEMU:
        return "qemu"
    return None


def record_choice(iface: InterfaceDef, tap: str, use_vhost: bool) -> InterfaceDef:
    """The interface as the live XML shows it: its tap, and the backend really used."""
    updated = dataclasses.replace(iface, target_dev=IfName(tap))
    if iface.is_virtio:
        name = NetDriverName.VHOST if use_vhost else NetDriverName.QEMU
        driver = iface.driver or InterfaceDriverDef()
        updated = dataclasses.replace(updated, driver=dataclasses.replace(driver, name=name))
    return updated


async def prepare_interface(
    iface: InterfaceDef,
    stack: contextlib.AsyncExitStack,
    *,
    netlink: LinkControl,
    networks: NetworkLookup,
    accel_is_kvm: bool,
    tun_path: str,
    vhost_path: str,
) -> tuple[InterfaceDef, NICPlan]:
    """Create the host side of one interface; its undo goes on ``stack``."""
    assert iface.alias is not None and iface.mac is not None
    plan = NICPlan(iface.alias)
    if not needs_tap(iface):
        return iface, plan
    queues = iface.driver.queues if iface.driver and iface.driver.queues else 1
    choice = choose_vhost(
        vhost_mode(iface),
        accel_is_kvm=accel_is_kvm,
        virtio=iface.is_virtio,
        queues=queues,
        path=vhost_path,
    )
    stack.callback(choice.close)
    request = TapRequest(
        mac=iface.mac,
        name=str(iface.target_dev) if iface.target_dev else None,
        mtu=iface.mtu,
        bridge=bridge_of(iface, networks),
        queues=queues,
        vnet_hdr=(iface.model or "") in _VNET_HDR_MODELS,
    )
    tap = await stack.enter_async_context(create_tap(request, netlink=netlink, tun_path=tun_path))
    plan.tap = tap
    plan.vhost = choice
    return record_choice(iface, tap.name, choice.use_vhost), plan


async def prepare_interfaces(
    domain: DomainDef,
    stack: contextlib.AsyncExitStack,
    *,
    netlink: LinkControl,
    networks: NetworkLookup,
    tun_path: str,
    vhost_path: str,
) -> PreparedHost:
    """Prepare every interface of a planned domain, in document order."""
    prepared = PreparedHost(domain)
    items: list[DeviceDef | RawXML] = []
    for item in domain.devices.items:
        if isinstance(item, InterfaceDef):
            try:
                item, plan = await prepare_interface(
                    item,
                    stack,
                    netlink=netlink,
                    networks=networks,
                    accel_is_kvm=domain.type is DomainType.KVM,
                    tun_path=tun_path,
                    vhost_path=vhost_path,
                )
            except (ConfigError, UnsupportedError, StateError) as exc:
                raise located(exc, domain.source, item) from None
            prepared.nics[plan.alias] = plan
        items.append(item)
    devices = dataclasses.replace(domain.devices, items=tuple(items))
    prepared.domain = dataclasses.replace(domain, devices=devices)
    return prepared
