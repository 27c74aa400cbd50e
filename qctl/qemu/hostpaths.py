"""Where the host side finds its device nodes and sysfs: the seam tests point elsewhere."""

from __future__ import annotations

from dataclasses import dataclass, field

from qctl.host import TUN_PATH, VHOST_NET_PATH, Sysfs

__all__ = ["HostPaths"]


@dataclass(frozen=True, slots=True)
class HostPaths:
    """Device nodes and the sysfs tree the host side uses; tests point them elsewhere."""

    tun: str = TUN_PATH
    vhost_net: str = VHOST_NET_PATH
    sysfs: Sysfs = field(default_factory=Sysfs)
