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
import tempfile
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from support import QEMU_VERSIONS, guest_dir, missing, qemu_path, unique

from qctl.host import TUN_PATH, Netlink
from qctl.testing import in_private_netns

pytest_plugins = ["pytester"]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Each test marked ``qemu`` runs once per QEMU of :data:`QEMU_VERSIONS` (ids
    ``qemu7.2``, ``qemu10.0``); the others run once."""
    if metafunc.definition.get_closest_marker("qemu") is not None:
        metafunc.parametrize("qemu_version", list(QEMU_VERSIONS), indirect=True)


@pytest.fixture(autouse=True)
def qemu_version(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str | None:
    """The QEMU this test runs against (a key of :data:`QEMU_VERSIONS`), ``None`` for a test
    not marked ``qemu``. Its binary is ``$QCTL_QEMU`` during the test, so domains started
    without an ``<emulator>`` (and ``qctl`` commands run from the test) use it."""
    version: str | None = getattr(request, "param", None)
    if version is not None:
        monkeypatch.setenv("QCTL_QEMU", qemu_path(version))
    return version


@pytest.fixture
def qemu_binary(qemu_version: str | None) -> str:
    """Path of the qemu-system-x86_64 this test runs against (tests marked ``qemu`` only)."""
    if qemu_version is None:
        pytest.fail("a test that uses the real QEMU must be marked qemu")
    return qemu_path(qemu_version)


_outcomes: dict[str, Counter[str]] = {version: Counter() for version in QEMU_VERSIONS}
_version_of: dict[str, str] = {}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Note which QEMU each collected QEMU-backed test runs against."""
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and "qemu_version" in callspec.params:
            _version_of[item.nodeid] = callspec.params["qemu_version"]


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Count each QEMU-backed test's outcome under its QEMU (see the terminal summary)."""
    version = _version_of.get(report.nodeid)
    if version is None:
        return
    if report.when == "call" or (report.when == "setup" and not report.passed):
        _outcomes[version][report.outcome] += 1
    elif report.when == "teardown" and report.failed:
        _outcomes[version]["error"] += 1


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """One line per QEMU: how its QEMU-backed tests went."""
    if not any(_outcomes.values()):
        return
    terminalreporter.section("per QEMU version")
    for version, counts in _outcomes.items():
        terminalreporter.write_line(
            f"{version}: {counts['passed']} passed, {counts['failed']} failed, "
            f"{counts['skipped']} skipped"
            + (f", {counts['error']} errors in teardown" if counts["error"] else "")
        )


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
        missing(f"test guest not built: no {', '.join(absent)} in {base} (run scripts/build-guest)")
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
def sockdir() -> Iterator[str]:
    """A short private directory for UNIX sockets (paths are limited to 107 bytes)."""
    with tempfile.TemporaryDirectory(prefix="qctl-test-") as path:
        yield path
