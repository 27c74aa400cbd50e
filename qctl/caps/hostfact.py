"""Host facts that feed the caps: which device nodes qctl can open (stdlib only).

The answer is "can this process open it read-write now", found by trying: existence alone
says nothing about permissions, and a missing kernel module shows up as ENODEV only on open.
The paths are parameters so tests can point them at files of their own.
"""

from __future__ import annotations

import os

from qctl.caps.model import HostFacts

__all__ = ["TUN_PATH", "VHOST_NET_PATH", "host_facts"]

VHOST_NET_PATH = "/dev/vhost-net"
TUN_PATH = "/dev/net/tun"


def host_facts(*, vhost_net_path: str = VHOST_NET_PATH, tun_path: str = TUN_PATH) -> HostFacts:
    """Whether ``/dev/vhost-net`` and ``/dev/net/tun`` open read-write for this process."""
    return HostFacts(vhost_net=_opens(vhost_net_path), tun=_opens(tun_path))


def _opens(path: str) -> bool:
    """Open ``path`` read-write and close it at once; False on any error."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return False
    os.close(fd)
    return True
