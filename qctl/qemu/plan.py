"""From a domain definition and a QEMU's capabilities to the definition the driver runs.

Planning is pure (randomness comes in as a function): it refuses what the configuration or
this QEMU cannot do, with errors that name the device and the missing capability, fills in
what libvirt fills in (MAC addresses, aliases, guest PCI addresses, root ports), and says
which command-line syntax this QEMU takes. Nothing on the host is touched, so a domain whose
command line cannot be built never creates a tap.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Callable

from qctl.caps import Capability, QEMUCaps
from qctl.conf import (
    ControllerModel,
    DeviceDef,
    DomainDef,
    DomainType,
    InterfaceDef,
    InterfaceType,
    RawXML,
    TeamingType,
    validate_domain,
)
from qctl.errors import UnsupportedError
from qctl.qemu.command import Features
from qctl.qemu.placement import is_q35, plan_domain
from qctl.types import MACAddress

__all__ = [
    "MACSource",
    "assign_macs",
    "check_support",
    "check_interface_support",
    "features_from_caps",
    "plan",
    "random_mac",
]

MACSource = Callable[[], MACAddress]


def random_mac() -> MACAddress:
    """A random MAC in QEMU's 52:54:00 range, as libvirt generates them."""
    return MACAddress(b"\x52\x54\x00" + secrets.token_bytes(3))


def features_from_caps(caps: QEMUCaps) -> Features:
    """The command-line choices this QEMU supports."""
    return Features(
        json_netdev=caps.has(Capability.NETDEV_JSON),
        json_device=caps.has(Capability.DEVICE_JSON),
        failover=caps.has(Capability.VIRTIO_NET_FAILOVER),
    )


def _unsupported(what: str, flag: Capability | str) -> UnsupportedError:
    name = flag.value if isinstance(flag, Capability) else flag
    return UnsupportedError(f"unsupported configuration: {what}", capability=name)


def check_interface_support(iface: InterfaceDef, caps: QEMUCaps) -> None:
    """Refuse an interface this QEMU (or qctl) cannot give the guest."""
    name = iface.alias or (str(iface.mac) if iface.mac else iface.type.value)
    if iface.model == "netfront" and not caps.has(Capability.XEN_PV_NIC):
        raise _unsupported(
            f"interface {name}: model 'netfront' needs QEMU's Xen PV NIC device "
            "(xen-net-device), which this QEMU does not have",
            Capability.XEN_PV_NIC,
        )
    if iface.type is InterfaceType.HOSTDEV:
        source = iface.source
        if source is None or source.pci is None:
            raise _unsupported(
                f"interface {name}: a USB host device cannot be assigned as a network "
                "interface; only PCI devices (SR-IOV VFs) can",
                "usb-hostdev-interface",
            )
        if not caps.has(Capability.VFIO_PCI):
            raise _unsupported(
                f"interface {name}: this QEMU has no vfio-pci device", Capability.VFIO_PCI
            )
    teaming = iface.teaming
    if teaming is not None:
        if teaming.type is TeamingType.PERSISTENT and not caps.has(Capability.VIRTIO_NET_FAILOVER):
            raise _unsupported(
                f"interface {name}: <teaming type='persistent'/> needs virtio-net failover "
                "(QEMU 4.2 or later), which this QEMU does not have",
                Capability.VIRTIO_NET_FAILOVER,
            )
        if teaming.type is TeamingType.TRANSIENT and not caps.has(Capability.FAILOVER_PAIR_ID):
            raise _unsupported(
                f"interface {name}: <teaming type='transient'/> needs failover_pair_id on "
                "PCI devices, which this QEMU does not have",
                Capability.FAILOVER_PAIR_ID,
            )


def check_support(domain: DomainDef, caps: QEMUCaps) -> None:
    """Refuse a domain this QEMU cannot run, naming the missing capability."""
    if domain.type is DomainType.KVM and not caps.has(Capability.KVM_PRESENT):
        raise _unsupported("<domain type='kvm'> but this host has no usable KVM", "kvm")
    machine = domain.os.machine
    known = {m.name for m in caps.machines} | {m.alias for m in caps.machines if m.alias}
    if machine and caps.machines and machine not in known:
        raise _unsupported(f"machine type {machine!r} is not known to this QEMU", "machine")
    if is_q35(domain) and not caps.has(Capability.PCIE_ROOT_PORT):
        raise _unsupported("q35 domains need the pcie-root-port device", Capability.PCIE_ROOT_PORT)
    for ctl in domain.controllers:
        if ctl.model not in (
            ControllerModel.PCI_ROOT,
            ControllerModel.PCIE_ROOT,
            ControllerModel.PCIE_ROOT_PORT,
            ControllerModel.PCI_BRIDGE,
        ):
            raise _unsupported(f"PCI controller model {ctl.model.value!r}", "pci-controller")
    for iface in domain.interfaces:
        check_interface_support(iface, caps)
    if domain.hostdevs and not caps.has(Capability.VFIO_PCI):
        raise _unsupported("<hostdev> needs the vfio-pci device", Capability.VFIO_PCI)


def assign_macs(domain: DomainDef, new_mac: MACSource) -> DomainDef:
    """Give every interface without a MAC a fresh one that no other interface has."""
    taken = {i.mac for i in domain.interfaces if i.mac is not None}
    items: list[DeviceDef | RawXML] = []
    for item in domain.devices.items:
        if isinstance(item, InterfaceDef) and item.mac is None:
            mac = new_mac()
            while mac in taken:
                mac = new_mac()
            taken.add(mac)
            item = dataclasses.replace(item, mac=mac)
        items.append(item)
    return dataclasses.replace(
        domain, devices=dataclasses.replace(domain.devices, items=tuple(items))
    )


def plan(
    domain: DomainDef, caps: QEMUCaps, *, new_mac: MACSource = random_mac, live: bool = False
) -> DomainDef:
    """Validate ``domain`` against its own rules and ``caps``, and fill in what QEMU needs.

    ``live`` accepts qctl's own aliases (``net0``), as a migration's destination must: the
    definition that travels keeps every alias, which QEMU's device ids are.
    """
    problems = validate_domain(domain, live=live)
    if problems:
        raise problems[0]
    check_support(domain, caps)
    return plan_domain(assign_macs(domain, new_mac))

