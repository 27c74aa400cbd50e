"""Fixtures for host tests: a guard that keeps link changes off the host, and link helpers.

Tests that create links need root (``CAP_NET_ADMIN``) **and** a private network namespace, as
``scripts/test`` provides (``unshare --net``). Run bare on a host, they skip; under CI (env
``CI`` set) a missing namespace fails instead, because CI must provide one. Tests that create
taps also need ``/dev/net/tun`` to open, which it does not inside a user namespace
(``unshare --map-root-user``): those skip.
"""

from __future__ import annotations

import itertools
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import NoReturn

import pytest

from qctl.host import TUN_PATH, Netlink

_counter = itertools.count()


def _missing(what: str) -> NoReturn:
    """Skip, or fail under CI, where every prerequisite must be there."""
    if os.environ.get("CI"):
        pytest.fail(f"{what} (CI is set, so this is a failure, not a skip)")
    pytest.skip(what)


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


def open_fd_count() -> int:
    """How many fds this process has open (to prove nothing leaked)."""
    return len(os.listdir("/proc/self/fd"))


def unique(prefix: str) -> str:
    """An interface name not used by any other test of this run (``prefix`` ≤ 9 chars)."""
    return f"{prefix}{os.getpid() % 1000}x{next(_counter)}"


@pytest.fixture(scope="session")
def netns_is_private() -> bool:
    """:func:`in_private_netns`, decided once per session (before our tests create links)."""
    return in_private_netns()


@pytest.fixture
def private_netns(netns_is_private: bool) -> None:
    """Skip (or fail under CI) unless links may be created here without touching the host."""
    if os.geteuid() != 0:
        _missing("needs root (CAP_NET_ADMIN) in a private network namespace; use scripts/test")
    if not netns_is_private:
        _missing(
            "refusing to create links in the host's network namespace; run under "
            "`unshare --net` (scripts/test does)"
        )


@pytest.fixture
def tun(private_netns: None) -> None:
    """Skip unless /dev/net/tun opens (it does not in a user namespace)."""
    try:
        os.close(os.open(TUN_PATH, os.O_RDWR))
    except OSError as exc:
        _missing(f"cannot open {TUN_PATH}: {exc.strerror}")


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
