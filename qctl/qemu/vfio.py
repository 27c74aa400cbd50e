"""The host side of a VFIO device: checks, SR-IOV VF configuration, and the vfio-pci driver.

For a ``<hostdev>`` or a ``type='hostdev'`` interface, in libvirt's order:

1. the device must exist, be an endpoint, sit in a viable IOMMU group, and not be held by
   this or another domain (:func:`qctl.host.check_assignable`);
2. for an interface on an SR-IOV VF, the VF's admin MAC and VLAN are saved, then set
   through the PF (the guest's MAC, and the ``<vlan><tag id>`` of the interface or its pool,
   else VLAN 0), so the guest's MAC survives driver resets and its traffic is tagged by the
   NIC; a VLAN on a device that is not a VF is refused (only a VF's PF can tag it);
3. with ``managed='yes'`` the device leaves its host driver for vfio-pci.

Every change is announced to the ledger (through ``note``) *before* it is made, so a crash
never loses the VF's original settings or the driver to give the device back to; its undo
goes on the caller's stack. :func:`release_vfio` undoes the same from a ledger entry.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Mapping

from qctl.conf import HostdevDef, InterfaceDef
from qctl.errors import UnsupportedError
from qctl.host import (
    LinkControl,
    PCIDevice,
    SavedVFConfig,
    Sysfs,
    apply_vf_config,
    bind_vfio,
    check_assignable,
    find_vf,
    rebind,
    restore_vf_config,
    save_vf_config,
)
from qctl.qemu.ledger import LedgerEntry, SavedVF
from qctl.record import record
from qctl.types import MACAddress, PCIAddress

__all__ = ["VFIODevice", "prepare_vfio", "release_vfio"]

Note = Callable[..., Awaitable[None]]


@record
class VFIODevice:
    """What :func:`prepare_vfio` needs to know of a device definition."""

    address: PCIAddress
    managed: bool
    mac: MACAddress | None
    #: the VLAN tag to set on the VF (``None``: clear it, as libvirt does)
    vlan: int | None = None

    @classmethod
    def of(cls, device: InterfaceDef | HostdevDef) -> VFIODevice:
        """From a ``<hostdev>`` or a hostdev interface (whose source is a PCI address).

        Validation has refused trunks and several tags, so a VLAN is its first tag.
        """
        if isinstance(device, HostdevDef):
            return cls(device.source, device.managed is True, None)
        assert device.source is not None and device.source.pci is not None
        vlan = device.vlan.tags[0].id if device.vlan is not None and device.vlan.tags else None
        return cls(device.source.pci, device.managed is True, device.mac, vlan)


def _saved(config: SavedVFConfig) -> SavedVF:
    return SavedVF(pf=config.pf, vf=config.vf, mac=str(config.mac), vlan=config.vlan)


def _config(saved: SavedVF) -> SavedVFConfig:
    return SavedVFConfig(pf=saved.pf, vf=saved.vf, mac=MACAddress.parse(saved.mac), vlan=saved.vlan)


async def prepare_vfio(
    device: VFIODevice,
    stack: contextlib.AsyncExitStack,
    *,
    netlink: LinkControl,
    sysfs: Sysfs,
    in_use: Mapping[PCIAddress, str],
    note: Note,
) -> None:
    """Make ``device`` ready for ``device_add vfio-pci``; undo goes on ``stack``.

    ``note(**changes)`` records ledger changes (``saved_vf``, ``original_driver``) before
    the host is changed.
    """
    pci = PCIDevice(device.address, sysfs=sysfs)
    check_assignable(pci, managed=device.managed, in_use=in_use)
    is_vf = pci.is_vf()
    if device.vlan is not None and not is_vf:
        raise UnsupportedError(
            f"unsupported configuration: <vlan> on {device.address}, which is not an SR-IOV "
            "VF (only a VF's PF can tag its traffic)",
            capability="vf-vlan",
        )
    if (device.mac is not None or device.vlan is not None) and is_vf:
        vf = find_vf(device.address, sysfs=sysfs)
        saved = await save_vf_config(vf, netlink)
        await note(saved_vf=_saved(saved))
        stack.push_async_callback(restore_vf_config, saved, netlink)
        await apply_vf_config(vf, netlink, mac=device.mac, vlan=device.vlan or 0)
    if device.managed:
        await note(original_driver=pci.driver() or "")
        original = await bind_vfio(pci)
        stack.push_async_callback(rebind, pci, original)


async def release_vfio(entry: LedgerEntry, *, netlink: LinkControl, sysfs: Sysfs) -> None:
    """Give a released VFIO device back: its host driver, then the VF's saved settings."""
    if entry.host_device is None:
        return
    if entry.original_driver is not None:
        pci = PCIDevice(PCIAddress.parse(entry.host_device), sysfs=sysfs)
        if pci.exists():
            await rebind(pci, entry.original_driver or None)
    if entry.saved_vf is not None:
        await restore_vf_config(_config(entry.saved_vf), netlink)
