"""Whether this process may create links without touching the host, and making it so.

A network namespace belongs to a thread, and pytest fixtures cannot give one to a single
test: tests share the process and its event loop thread. So the plugin either runs in a
namespace made for the whole run (``unshare --net pytest …``, what scripts/test does), or
makes one itself before any thread starts (``pytest --qctl-unshare-net``, see
:func:`unshare_net`).
"""

from __future__ import annotations

import ctypes
import os
import socket
import subprocess
from pathlib import Path

__all__ = ["in_private_netns", "unshare_net"]

_CLONE_NEWNET = 0x40000000


def in_private_netns() -> bool:
    """Whether this process's network namespace is not the host's initial one.

    Compares namespace inodes with pid 1's, and with kthreadd's (pid 2 on a host: kernel
    threads always live in the initial namespace), since some sandboxes hide pid 1 even from
    root. If neither can be inspected, falls back on what a namespace fresh from
    ``unshare --net`` looks like before any test ran in it: nothing but the loopback device.
    """
    ours = os.stat("/proc/self/ns/net").st_ino
    references = []
    for pid in (1, 2):
        if pid == 2 and not _is_kthreadd(pid):
            continue
        try:
            references.append(os.stat(f"/proc/{pid}/ns/net").st_ino)
        except OSError:
            continue
    if references:
        return ours not in references
    return [name for _, name in socket.if_nameindex()] == ["lo"]


def _is_kthreadd(pid: int) -> bool:
    """Whether ``pid`` is the kernel's thread daemon (not so inside a pid namespace)."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() == "kthreadd"
    except OSError:
        return False


def unshare_net() -> None:
    """Move the calling thread into a new network namespace with its loopback up.

    Threads started afterwards inherit it, threads already running do not: call it before
    the process starts any (the plugin does, in ``pytest_configure``). Needs CAP_SYS_ADMIN;
    OSError otherwise. The namespace has no route out: tests that need the network outside
    cannot run in the same session.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(_CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"unshare(CLONE_NEWNET): {os.strerror(errno)}")
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
