"""Fixtures shared by every suite: a guard that keeps link changes off the host, live netlink
and bridges, the QEMU binary and the bundled test guest.

Tests that create links need root (``CAP_NET_ADMIN``) **and** a private network namespace, as
``scripts/test`` provides (``unshare --net``). Run bare on a host, they skip; under CI (env
``CI`` set) a missing prerequisite fails instead, because CI must provide it. Tests that
create taps also need ``/dev/net/tun`` to open, which it does not inside a user namespace
(``unshare --map-root-user``): those skip.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from support import QEMU_BINARY, guest_dir, missing, unique

from qctl.host import TUN_PATH, Netlink
from qctl.testing import in_private_netns

pytest_plugins = ["pytester"]


@pytest.fixture(scope="session")
def netns_is_private() -> bool:
    """:func:`in_private_netns`, decided once per session (before our tests create links)."""
    return in_private_netns()


@pytest.fixture
def private_netns(netns_is_private: bool) -> None:
    """Skip (or fail under CI) unless links may be created here without touching the host."""
    if os.geteuid() != 0:
        missing("needs root (CAP_NET_ADMIN) in a private network namespace; use scripts/test")
    if not netns_is_private:
        missing(
            "refusing to create links in the host's network namespace; run under "
            "`unshare --net` (scripts/test does)"
        )


@pytest.fixture
def tun(private_netns: None) -> None:
    """Skip unless /dev/net/tun opens (it does not in a user namespace)."""
    try:
        os.close(os.open(TUN_PATH, os.O_RDWR))
    except OSError as exc:
        missing(f"cannot open {TUN_PATH}: {exc.strerror}")


@pytest.fixture
async def netlink(private_netns: None) -> AsyncIterator[Netlink]:
    """A live :class:`Netlink`, its socket already open (so fd counts taken later are fair)."""
    async with Netlink() as nl:
        await nl.link_exists("lo")
        yield nl


@pytest.fixture
async def bridge(netlink: Netlink) -> AsyncIterator[Callable[..., Awaitable[str]]]:
    """Factory: ``await bridge(mtu=None)`` creates a fresh bridge, deleted after the test."""
    made: list[str] = []

    async def make(mtu: int | None = None) -> str:
        name = unique("qbr")
        await netlink.create_bridge(name)
        made.append(name)
        if mtu is not None:
            await netlink.set_mtu(name, mtu)
        return name

    yield make
    for name in made:
        await netlink.delete_link(name)


@pytest.fixture
def guest_paths() -> tuple[Path, Path]:
    """(kernel, initrd) of the bundled guest: the stock bzImage and the initramfs."""
    base = guest_dir()
    kernel, initrd = base / "vmlinuz", base / "initrd.img"
    absent = [p.name for p in (kernel, initrd) if not p.is_file()]
    if absent:
        missing(
            f"test guest not built: no {', '.join(absent)} in {base} (run scripts/build-guest)"
        )
    return kernel, initrd


@pytest.fixture
def guest_pvh_kernel(guest_paths: tuple[Path, Path]) -> Path:
    """The uncompressed PVH kernel (vmlinux): boots ~3 s faster under TCG than vmlinuz.

    Optional output of scripts/build-guest (only for kernels with a PVH entry point), so its
    absence is a skip even under CI.
    """
    path = guest_paths[0].parent / "vmlinux"
    if not path.is_file():
        pytest.skip(f"no PVH kernel {path} (this kernel has no PVH entry point)")
    return path


@pytest.fixture
def qemu_binary() -> str:
    """Path of qemu-system-x86_64."""
    path = shutil.which(QEMU_BINARY)
    if path is None:
        missing(f"{QEMU_BINARY} not found (install qemu-system-x86)")
    return path


@pytest.fixture
def sockdir() -> Iterator[str]:
    """A short private directory for UNIX sockets (paths are limited to 107 bytes)."""
    with tempfile.TemporaryDirectory(prefix="qctl-test-") as path:
        yield path
