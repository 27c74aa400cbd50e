"""HOST layer: the host side of guest devices, from plain values (never ``*Def`` objects).

- :mod:`.link`: :class:`LinkInfo` and the :class:`LinkControl` protocol (what we need from
  rtnetlink), so callers can inject a fake;
- :mod:`.linkstat`: :func:`link_stats`, a link's traffic counters (/proc/net/dev);
- :mod:`.netlink`: :class:`Netlink`, the rtnetlink implementation, the only pyroute2 user;
- :mod:`.tap`: :func:`create_tap` and the :class:`Tap` handle, :func:`delete_tap` for cleanup;
- :mod:`.vhost`: :func:`choose_vhost`, the vhost-net decision, and :func:`open_vhost_net`;
- :mod:`.sysfs`: :class:`Sysfs`, the injectable sysfs root and writer;
- :mod:`.pci`: :class:`PCIDevice`, the VFIO assignment checks, :func:`bind_vfio` and
  :func:`rebind` for ``managed='yes'`` devices;
- :mod:`.filesystem`: :func:`in_memory`, whether a path is on tmpfs or ramfs, and
  :func:`sync_file_system` (syncfs);
- :mod:`.sriov`: :class:`VirtualFunction` discovery (:func:`list_vfs`, :func:`find_vf`) and
  VF admin MAC/VLAN save, apply and restore.
"""

from .filesystem import in_memory, sync_file_system
from .link import VLAN_MAX, LinkControl, LinkInfo, VFConfig, netlink_error
from .linkstat import LinkStats, link_stats
from .netlink import Netlink
from .pci import (
    PCI_STUB,
    VFIO_PCI,
    PCIDevice,
    bind_vfio,
    check_assignable,
    check_endpoint,
    check_iommu_group,
    check_not_in_use,
    rebind,
)
from .sriov import (
    SavedVFConfig,
    VirtualFunction,
    apply_vf_config,
    find_vf,
    list_vfs,
    restore_vf_config,
    save_vf_config,
)
from .sysfs import SYSFS_ROOT, KernelSysfsWriter, Sysfs, SysfsWriter
from .tap import TUN_PATH, PendingTap, Tap, TapRequest, create_tap, delete_tap, tap_mac
from .vhost import VHOST_NET_PATH, VhostChoice, VhostMode, choose_vhost, open_vhost_net

__all__ = [
    "PCI_STUB",
    "SYSFS_ROOT",
    "TUN_PATH",
    "VFIO_PCI",
    "VHOST_NET_PATH",
    "VLAN_MAX",
    "KernelSysfsWriter",
    "LinkControl",
    "LinkInfo",
    "LinkStats",
    "Netlink",
    "PCIDevice",
    "PendingTap",
    "SavedVFConfig",
    "Sysfs",
    "SysfsWriter",
    "Tap",
    "TapRequest",
    "VFConfig",
    "VhostChoice",
    "VhostMode",
    "VirtualFunction",
    "apply_vf_config",
    "bind_vfio",
    "check_assignable",
    "check_endpoint",
    "check_iommu_group",
    "check_not_in_use",
    "choose_vhost",
    "create_tap",
    "delete_tap",
    "find_vf",
    "in_memory",
    "link_stats",
    "list_vfs",
    "netlink_error",
    "open_vhost_net",
    "rebind",
    "restore_vf_config",
    "save_vf_config",
    "sync_file_system",
    "tap_mac",
]
