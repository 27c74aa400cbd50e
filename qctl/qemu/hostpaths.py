"""Where the host side finds its device nodes and sysfs (the seam tests point elsewhere),
and whether QEMU runs confined."""

from __future__ import annotations

from dataclasses import field

from qctl.host import TUN_PATH, VHOST_NET_PATH, Sysfs
from qctl.qemu.confine import VFIO_DIR
from qctl.record import record

__all__ = ["HostPaths"]


@record
class HostPaths:
    """Device nodes and the sysfs tree the host side uses (tests point them elsewhere), and
    how QEMU is confined on this host."""

    tun: str = TUN_PATH
    vhost_net: str = VHOST_NET_PATH
    sysfs: Sysfs = field(default_factory=Sysfs)
    vfio_dir: str = VFIO_DIR
    #: QEMU's confinement (:mod:`qctl.qemu.confine`): None confines when qctl is root,
    #: False never (``--no-confine``); ``qemu_user`` overrides the QEMU user
    confine: bool | None = None
    qemu_user: str | None = None
