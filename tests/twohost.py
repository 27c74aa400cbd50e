"""Two hosts on one machine, for migration tests: network namespaces joined by a veth pair.

Each :class:`Host` is a network namespace with its loopback up, its end of the veth pair
(``192.0.2.1/24`` on host A, ``192.0.2.2/24`` on host B: TEST-NET-1, used inside the
namespaces only), a bridge ``br0`` of its own, and its own qctl state root. Both bridges
have the same name, so one domain definition fits either host.

A process sits in one namespace, so there are two ways to act on a host:

- a subprocess, ``host.command(...)`` / ``host.run(...)``: ``nsenter --net`` into it, for
  the ``qctl`` command (``--state-dir host.state_root`` is added by the caller);
- in this process, ``with host.entered(): ...``: the calling thread joins the namespace
  for the block (``setns``), and back. Under asyncio this is the event loop's thread, so
  keep inside the block only work for that host, with no other task creating sockets,
  taps or processes meanwhile; what is created inside stays in that host (a QEMU and its
  taps, a netlink socket), while UNIX sockets such as QMP monitors work from anywhere.

The namespaces are held by a ``sleep`` process each (made with ``unshare --net``) and by
an fd: nothing is mounted, so a crashed test leaves no named namespace behind, and the
veth pair goes away with the namespaces.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from support import unique

__all__ = ["FAILOVER_DEVICES", "FAILOVER_MAC", "Host", "TwoHosts"]

# The failover pair the migration tests and ``scripts/bench migrate`` put on either host's
# ``br0``: a virtio standby and an e1000e standing in for the VF, one MAC.
FAILOVER_MAC = "52:54:00:20:00:01"
FAILOVER_DEVICES = f"""
    <interface type='bridge'>
      <mac address='{FAILOVER_MAC}'/><source bridge='br0'/><model type='virtio'/>
      <teaming type='persistent'/><alias name='ua-standby'/>
    </interface>
    <interface type='bridge'>
      <mac address='{FAILOVER_MAC}'/><source bridge='br0'/><model type='e1000e'/>
      <teaming type='transient' persistent='ua-standby'/><alias name='ua-primary'/>
    </interface>
"""

_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, _CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"setns: {os.strerror(errno)}")


@dataclass
class Host:
    """One host of the rig: a network namespace, its address, bridge and state root."""

    label: str
    address: str
    veth: str
    bridge: str
    state_root: Path
    holder: subprocess.Popen[bytes]
    ns_fd: int

    def command(self, *argv: str) -> list[str]:
        """``argv`` run inside this host's namespace."""
        return ["nsenter", f"--net=/proc/{self.holder.pid}/ns/net", *argv]

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside this host's namespace and wait for it."""
        return subprocess.run(
            self.command(*argv), check=check, capture_output=True, text=True, timeout=60
        )

    @contextlib.contextmanager
    def entered(self) -> Iterator[None]:
        """The calling thread in this host's namespace for the block (see the module)."""
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        try:
            _setns(self.ns_fd)
            try:
                yield
            finally:
                _setns(home)
        finally:
            os.close(home)

    def links(self) -> set[str]:
        """The names of this host's network links."""
        out = self.run("ip", "-o", "link", "show").stdout
        return {line.split(": ")[1].split("@")[0] for line in out.splitlines() if ": " in line}


def _spawn_namespace() -> tuple[subprocess.Popen[bytes], int]:
    """A new network namespace, held by a sleeping process and an fd to it."""
    ours = os.stat("/proc/self/ns/net").st_ino
    holder = subprocess.Popen(["unshare", "--net", "--", "sleep", "infinity"])
    deadline = time.monotonic() + 10
    while True:
        try:
            if os.stat(f"/proc/{holder.pid}/ns/net").st_ino != ours:
                break
        except FileNotFoundError:
            pass
        if holder.poll() is not None or time.monotonic() > deadline:
            holder.kill()
            raise RuntimeError("unshare --net did not make a namespace")
        time.sleep(0.01)
    return holder, os.open(f"/proc/{holder.pid}/ns/net", os.O_RDONLY)


class TwoHosts:
    """Hosts A and B joined by a veth pair; ``close()`` removes everything it made."""

    def __init__(self, base: Path) -> None:
        self.hosts: list[Host] = []
        try:
            tag = unique("m")
            for label, address in (("a", "192.0.2.1"), ("b", "192.0.2.2")):
                holder, fd = _spawn_namespace()
                root = base / f"host-{label}"
                self.hosts.append(
                    Host(label, address, f"{tag}{label}", "br0", root, holder, fd)
                )
            a, b = self.hosts
            subprocess.run(
                ["ip", "link", "add", a.veth, "type", "veth", "peer", "name", b.veth], check=True
            )
            for host in self.hosts:
                subprocess.run(
                    ["ip", "link", "set", host.veth, "netns", str(host.holder.pid)], check=True
                )
                for step in (
                    ("ip", "link", "set", "lo", "up"),
                    ("ip", "addr", "add", f"{host.address}/24", "dev", host.veth),
                    ("ip", "link", "set", host.veth, "up"),
                    ("ip", "link", "add", host.bridge, "type", "bridge"),
                    ("ip", "link", "set", host.bridge, "up"),
                ):
                    host.run(*step)
        except BaseException:
            self.close()
            raise

    @property
    def a(self) -> Host:
        """The source host (192.0.2.1)."""
        return self.hosts[0]

    @property
    def b(self) -> Host:
        """The destination host (192.0.2.2)."""
        return self.hosts[1]

    def close(self) -> None:
        """End the namespaces (each goes once the processes in it, QEMU too, are gone)."""
        for host in self.hosts:
            host.holder.kill()
            host.holder.wait()
            os.close(host.ns_fd)
        self.hosts = []
