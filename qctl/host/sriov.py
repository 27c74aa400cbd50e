"""SR-IOV virtual functions: finding them in sysfs, and their admin MAC/VLAN through the PF.

A VF given to a guest with VFIO (``<interface type='hostdev'>``, or a ``hostdev`` network
pool) gets its guest MAC and VLAN from its physical function: the PF driver keeps, per VF, an
*admin* MAC the VF's driver starts with and a VLAN it tags the VF's traffic with. So, like
libvirt (``virNetDevSaveNetConfig``/``virNetDevSetNetConfig``):

1. :func:`save_vf_config` reads the VF's current admin MAC and VLAN; the caller keeps the
   :class:`SavedVFConfig` in the domain's ledger *before* changing anything, so a crash
   between the change and the release cannot lose the original values;
2. :func:`apply_vf_config` sets the guest's MAC (and VLAN, when the interface has one);
3. :func:`restore_vf_config` puts the saved values back on release.

The PF must be administratively up: a down PF accepts the settings but does not apply them
to the VF, so we refuse rather than pretend (and do not bring it up ourselves, which could
start IPv6 autoconfiguration on a host interface behind the admin's back).

Two driver quirks are handled as libvirt does: some PF drivers refuse an all-zero admin MAC
with ``EINVAL`` (the usual value to restore), so it is retried as ``02:00:00:00:00:00``
(zero with the "locally administered" bit); and when the saved VLAN is 0, an ``EPERM`` on
clearing it means the PF's switch is not under this host's control (nothing to clear).

Sysfs layout used (all under an injectable :class:`~qctl.host.sysfs.Sysfs`)::

    class/net/PF/device                 → the PF's PCI device
    class/net/PF/device/sriov_totalvfs  present on SR-IOV capable PFs
    class/net/PF/device/virtfnN         → VF number N's PCI device
    bus/pci/devices/VF/physfn           → the PF's PCI device
    bus/pci/devices/PF/net/*            the PF's network interface(s)
"""

from __future__ import annotations

import errno
import logging

from qctl.record import record

from ..errors import HostError, NetlinkError, add_rollback_note
from ..types import MACAddress, PCIAddress
from .link import VLAN_MAX, LinkControl
from .pci import PCIDevice
from .sysfs import Sysfs

__all__ = [
    "SavedVFConfig",
    "VirtualFunction",
    "apply_vf_config",
    "find_vf",
    "list_vfs",
    "restore_vf_config",
    "save_vf_config",
]

log = logging.getLogger(__name__)

_ZERO_MAC = MACAddress(bytes(6))
_ALT_ZERO_MAC = MACAddress(bytes([0x02, 0, 0, 0, 0, 0]))


@record
class VirtualFunction:
    """SR-IOV VF number ``index`` of the PF whose network interface is ``pf``."""

    pf: str
    index: int
    address: PCIAddress

    def __str__(self) -> str:
        return f"VF {self.index} of {self.pf} ({self.address})"


@record
class SavedVFConfig:
    """A VF's admin MAC and VLAN before qctl changed them: what to restore on release.

    Plain values, for the caller to store in its ledger (and build again from it).
    """

    pf: str
    vf: int
    mac: MACAddress
    vlan: int


# -- sysfs -------------------------------------------------------------------------------------


def _pf_device(pf: str, sysfs: Sysfs) -> PCIDevice:
    """The PCI device behind network interface ``pf``, checked to be an SR-IOV PF."""
    net = sysfs.path("class", "net", pf)
    if not net.exists():
        raise HostError(f"no network interface {pf} on this host")
    name = sysfs.link_name(net / "device")
    if name is None:
        raise HostError(f"{pf} is not a PCI network device, so not an SR-IOV PF")
    try:
        address = PCIAddress.parse(name)
    except ValueError:
        raise HostError(f"{pf} is not a PCI network device ({name}), so not an SR-IOV PF") from None
    device = PCIDevice(address, sysfs=sysfs)
    if not (device.path / "sriov_totalvfs").exists():
        raise HostError(f"{pf} ({address}) is not an SR-IOV physical function")
    return device


def list_vfs(pf: str, *, sysfs: Sysfs | None = None) -> list[VirtualFunction]:
    """The VFs of the SR-IOV PF whose network interface is ``pf``, by VF number.

    Empty when SR-IOV is capable but not enabled (``sriov_numvfs`` is 0). Raises
    :class:`HostError` when ``pf`` is missing or not an SR-IOV PF.
    """
    sysfs = sysfs or Sysfs()
    device = _pf_device(pf, sysfs)
    return [
        VirtualFunction(pf=pf, index=index, address=address) for index, address in device.virtfns()
    ]


def find_vf(address: PCIAddress, *, sysfs: Sysfs | None = None) -> VirtualFunction:
    """The VF at PCI ``address``: its PF's network interface and its VF number.

    Raises :class:`HostError` when the device is missing, is not a VF, or its PF has no
    network interface (PF driver not loaded: the VF cannot be configured then).
    """
    device = PCIDevice(address, sysfs=sysfs)
    device.require()
    pf_address = device.physfn()
    if pf_address is None:
        raise HostError(f"PCI device {address} is not an SR-IOV virtual function")
    index = device.vf_index()
    assert index is not None  # it has a physfn
    names = PCIDevice(pf_address, sysfs=device.sysfs).net_names()
    if not names:
        raise HostError(
            f"the PF {pf_address} of VF {address} has no network interface (is its driver "
            "loaded?), so the VF's MAC and VLAN cannot be set"
        )
    if len(names) > 1:
        log.debug("PF %s has several interfaces %s; using %s", pf_address, names, names[0])
    return VirtualFunction(pf=names[0], index=index, address=address)


# -- netlink -----------------------------------------------------------------------------------


async def _require_pf_up(vf: VirtualFunction, netlink: LinkControl) -> None:
    link = await netlink.get_link(vf.pf)
    if link is None:
        raise HostError(f"cannot configure {vf}: there is no network interface {vf.pf}")
    if not link.up:
        raise HostError(
            f"cannot configure {vf}: {vf.pf} is down, and a down PF does not pass settings on "
            f"to its VFs; bring {vf.pf} up in the host's network configuration first"
        )


async def save_vf_config(vf: VirtualFunction, netlink: LinkControl) -> SavedVFConfig:
    """Read ``vf``'s admin MAC and VLAN, to restore later; checks the PF is up."""
    await _require_pf_up(vf, netlink)
    config = await netlink.get_vf_config(vf.pf, vf.index)
    return SavedVFConfig(pf=vf.pf, vf=vf.index, mac=config.mac, vlan=config.vlan)


async def _set_mac(pf: str, index: int, mac: MACAddress, netlink: LinkControl) -> None:
    try:
        await netlink.set_vf_config(pf, index, mac=mac)
    except NetlinkError as exc:
        if mac != _ZERO_MAC or exc.errno != errno.EINVAL:
            raise
        log.debug("%s refuses a zero MAC for VF %d; using %s", pf, index, _ALT_ZERO_MAC)
        await netlink.set_vf_config(pf, index, mac=_ALT_ZERO_MAC)


async def apply_vf_config(
    vf: VirtualFunction,
    netlink: LinkControl,
    *,
    mac: MACAddress | None = None,
    vlan: int | None = None,
) -> None:
    """Set ``vf``'s admin ``mac`` and ``vlan`` (0 clears it); ``None`` leaves one as it is.

    Not atomic: when the VLAN fails the MAC is already set, so callers restore the
    :class:`SavedVFConfig` they saved first (their undo for this step).
    """
    if vlan is not None and not 0 <= vlan <= VLAN_MAX:
        raise HostError(f"cannot set the VLAN of {vf} to {vlan}: a VLAN id is 0 to {VLAN_MAX}")
    if mac is not None:
        await _set_mac(vf.pf, vf.index, mac, netlink)
    if vlan is not None:
        await netlink.set_vf_config(vf.pf, vf.index, vlan=vlan)


async def restore_vf_config(saved: SavedVFConfig, netlink: LinkControl) -> None:
    """Put back the admin MAC and VLAN of ``saved``; both are tried even if one fails.

    The first failure is raised, with the second attached as a note. Idempotent.
    """
    error: NetlinkError | None = None
    try:
        await _set_mac(saved.pf, saved.vf, saved.mac, netlink)
    except NetlinkError as exc:
        error = exc
    try:
        await netlink.set_vf_config(saved.pf, saved.vf, vlan=saved.vlan)
    except NetlinkError as exc:
        if saved.vlan == 0 and exc.errno == errno.EPERM:
            log.debug("%s does not let us clear VF %d's VLAN: %s", saved.pf, saved.vf, exc)
        elif error is None:
            error = exc
        else:
            add_rollback_note(error, exc, f"restoring the VLAN of VF {saved.vf} of {saved.pf}")
    if error is not None:
        raise error
