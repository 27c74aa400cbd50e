"""From a domain definition and a QEMU's capabilities to the definition the driver runs.

Planning is pure (randomness comes in as a function): it refuses what the configuration or
this QEMU cannot do, with errors that name the device and the missing capability, fills in
what libvirt fills in (MAC addresses, aliases, guest PCI addresses, root ports), and says
which command-line syntax this QEMU takes. Nothing on the host is touched, so a domain whose
command line cannot be built never creates a tap.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import secrets
from collections.abc import Callable

from qctl.caps import Capability, QEMUCaps, QEMUInstall, locate_install
from qctl.conf import (
    ControllerModel,
    DeviceDef,
    DomainDef,
    DomainType,
    ElementDef,
    HostdevDef,
    InterfaceDef,
    InterfaceType,
    RawXML,
    TeamingType,
    not_created,
    review_domain,
)
from qctl.errors import ConfigError, QctlError, UnsupportedError
from qctl.qemu.command import Features
from qctl.qemu.disk import plan_disks
from qctl.qemu.placement import is_q35, plan_domain
from qctl.types import MACAddress

__all__ = [
    "MACSource",
    "assign_macs",
    "check_hostdev_support",
    "check_support",
    "check_interface_support",
    "features_from_caps",
    "located",
    "plan",
    "random_mac",
]

MACSource = Callable[[], MACAddress]

log = logging.getLogger(__name__)


def random_mac() -> MACAddress:
    """A random MAC in QEMU's 52:54:00 range, as libvirt generates them."""
    return MACAddress(b"\x52\x54\x00" + secrets.token_bytes(3))


def features_from_caps(caps: QEMUCaps) -> Features:
    """The command-line choices this QEMU supports, and the data directories its binary
    needs (see :mod:`qctl.caps.install`)."""
    install = locate_install(caps.binary) if caps.binary else QEMUInstall()
    return Features(
        json_netdev=caps.has(Capability.NETDEV_JSON),
        json_device=caps.has(Capability.DEVICE_JSON),
        failover=caps.has(Capability.VIRTIO_NET_FAILOVER),
        data_dirs=install.data_dirs,
    )


def _refusal(
    what: str, flag: Capability | str, *, source: str | None = None, at: ElementDef | None = None
) -> UnsupportedError:
    """The refusal of ``what``; ``FILE:LINE:`` first when the element came from a file."""
    name = flag.value if isinstance(flag, Capability) else flag
    line = at.line if at is not None else None
    where = ""
    if source is not None or line is not None:
        where = f"{source or '<string>'}{'' if line is None else f':{line}'}: "
    return UnsupportedError(f"{where}unsupported configuration: {what}", capability=name)


def located(exc: QctlError, source: str | None, at: ElementDef) -> QctlError:
    """``exc`` (raised for element ``at`` of a domain read from ``source``) with the file
    and line in front of its message, as validation errors have them; a
    :class:`ConfigError` gets its ``source``/``line`` filled in instead."""
    if isinstance(exc, ConfigError):
        if exc.source is None:
            exc.source = source
        if exc.line is None:
            exc.line = at.line
        return exc
    where = f"{source or '<string>'}{'' if at.line is None else f':{at.line}'}"
    located_exc = copy.copy(exc)
    located_exc.args = (f"{where}: {exc}",)
    return located_exc


def check_interface_support(
    iface: InterfaceDef, caps: QEMUCaps, *, source: str | None = None
) -> None:
    """Refuse an interface this QEMU (or qctl) cannot give the guest; ``source`` is the
    file it came from, named in the error with the interface's line."""
    name = iface.alias or (str(iface.mac) if iface.mac else iface.type.value)

    def _unsupported(what: str, flag: Capability | str) -> UnsupportedError:
        return _refusal(what, flag, source=source, at=iface)

    if iface.model == "netfront" and not caps.has(Capability.XEN_PV_NIC):
        raise _unsupported(
            f"interface {name}: model 'netfront' needs QEMU's Xen PV NIC device "
            "(xen-net-device), which this QEMU does not have",
            Capability.XEN_PV_NIC,
        )
    if iface.type is InterfaceType.HOSTDEV:
        if iface.source is None or iface.source.pci is None:
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
    """Refuse a domain this QEMU cannot run, naming the missing capability (and the file
    and line the domain came from)."""

    def _unsupported(
        what: str, flag: Capability | str, at: ElementDef | None = None
    ) -> UnsupportedError:
        return _refusal(what, flag, source=domain.source, at=at or domain)

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
            raise _unsupported(f"PCI controller model {ctl.model.value!r}", "pci-controller", ctl)
    for iface in domain.interfaces:
        check_interface_support(iface, caps, source=domain.source)
        if iface.is_usb and is_q35(domain):
            raise _unsupported(
                "a usb-net NIC on a q35 machine (qctl adds a USB controller only on pc)",
                "usb-controller",
                iface,
            )
    for hostdev in domain.hostdevs:
        check_hostdev_support(hostdev, caps, source=domain.source)


def check_hostdev_support(
    hostdev: HostdevDef, caps: QEMUCaps, *, source: str | None = None
) -> None:
    """Refuse a ``<hostdev>`` this QEMU cannot give the guest."""
    if not caps.has(Capability.VFIO_PCI):
        raise _refusal(
            "<hostdev> needs the vfio-pci device", Capability.VFIO_PCI, source=source, at=hostdev
        )
    if hostdev.teaming is not None and not caps.has(Capability.FAILOVER_PAIR_ID):
        raise _refusal(
            "<hostdev> with <teaming type='transient'/> needs failover_pair_id on PCI "
            "devices, which this QEMU does not have",
            Capability.FAILOVER_PAIR_ID,
            source=source,
            at=hostdev,
        )


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

    Errors name the file the domain was read from and the line; warnings (what libvirt
    accepts but qctl doubts) are logged. A device element qctl would keep but not create
    (``<video>``, …) is refused, so the live XML never shows what QEMU does not have.
    """
    found = review_domain(domain, live=live)
    if found.errors:
        raise found.errors[0]
    refused = not_created(domain, source=domain.source)
    if refused:
        raise refused[0]
    for warning in found.warnings:
        log.warning("%s", warning)
    check_support(domain, caps)
    try:
        return plan_domain(plan_disks(assign_macs(domain, new_mac)))
    except ConfigError as exc:
        if exc.source is None:
            exc.source = domain.source
        raise
    except UnsupportedError as exc:  # a disk or controller qctl cannot create
        raise located(exc, domain.source, domain) from None
