"""Helpers shared by the test suites (plain functions; the fixtures are in conftest.py).

``tests/`` is on ``sys.path`` (pytest puts the root conftest's folder there), so suites
import this as ``support``.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import NoReturn

import pytest
from fakeqemu import FakeLauncher

from qctl import Console, Domain, Launcher, ProcessError, QEMUCaps, parse_domain
from qctl.qemu.process import is_alive, process_identity

REPO_ROOT = Path(__file__).resolve().parents[1]
QEMU_BINARY = "qemu-system-x86_64"
# The QEMUs the QEMU-backed tests run against, by test id: the system's (Debian 12's 7.2) and
# the one scripts/fetch-qemu unpacks from backports.
QEMU_VERSIONS: dict[str, str] = {
    "qemu7.2": QEMU_BINARY,
    "qemu10.0": str(REPO_ROOT / ".cache" / "qemu-10.0" / "usr" / "bin" / QEMU_BINARY),
}

#: a domain for the fake QEMU (tests/fakeqemu.py): q35, one empty root port to hot-plug into
FAKE_DOMAIN = """<domain type='qemu'><name>{name}</name><memory unit='MiB'>64</memory>
  <os><type arch='x86_64' machine='q35'>hvm</type></os>
  <devices><controller type='pci' index='1' model='pcie-root-port'/></devices></domain>"""
USER_NIC = "<interface type='user'><model type='virtio'/></interface>"

_counter = itertools.count()


def recorded_caps() -> QEMUCaps:
    """The capabilities recorded from QEMU 7.2, for domains of the fake QEMU."""
    path = REPO_ROOT / "tests" / "qemu" / "data" / "argv" / "qemu-7.2.caps.json"
    return QEMUCaps.from_json(path.read_text())


async def start_fake(state_root: Path, prefix: str, *, launcher: Launcher | None = None) -> Domain:
    """A :data:`FAKE_DOMAIN` named ``prefix`` plus a unique suffix, started on the fake QEMU
    (``launcher``'s, or a new one's)."""
    return await Domain.start(
        parse_domain(FAKE_DOMAIN.format(name=unique(prefix))),
        caps=recorded_caps(),
        state_root=state_root,
        launcher=launcher if launcher is not None else FakeLauncher(),
    )


def run_qctl(
    *args: str, state: Path, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run the ``qctl`` command (a fresh process, like a user) against the state root ``state``.

    Whatever the outcome, it must never print a traceback; with ``check`` it must succeed.
    """
    result = subprocess.run(
        [sys.executable, "-m", "qctl.cli.main", *args, "--state-dir", str(state)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check:
        assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result


def missing(what: str) -> NoReturn:
    """Skip for a missing prerequisite, or fail under CI (env ``CI`` set), which must have it."""
    if os.environ.get("CI"):
        pytest.fail(f"{what} (CI is set, so this is a failure, not a skip)")
    pytest.skip(what)


def qemu_path(version: str) -> str:
    """The binary of ``version`` (a key of :data:`QEMU_VERSIONS`); a skip, or a failure under
    CI, when it is not there."""
    name = QEMU_VERSIONS[version]
    path = shutil.which(name)
    if path is None:
        missing(f"{name} not found (scripts/bootstrap installs it)")
    return path


def open_fd_count() -> int:
    """How many fds this process has open (to prove nothing leaked)."""
    return len(os.listdir("/proc/self/fd"))


def unique(prefix: str) -> str:
    """An interface name not used by any other test of this run (``prefix`` ≤ 9 chars)."""
    return f"{prefix}{os.getpid() % 1000}x{next(_counter)}"


def guest_dir() -> Path:
    """The directory scripts/build-guest writes the test guest to."""
    env = os.environ.get("QCTL_GUEST_DIR")
    return Path(env) if env else REPO_ROOT / ".cache" / "guest"


NICS_RE = re.compile(r"^QCTL-NICS:(.*)$", re.MULTILINE)


def guest_nics(console: Path) -> dict[str, tuple[str, str]] | None:
    """The guest's latest interface report from its serial log: {mac: (name, driver)}.

    Only complete lines count: the guest may be writing the last one right now.
    """
    try:
        text = console.read_text(errors="replace")
    except FileNotFoundError:
        return None
    reports = NICS_RE.findall(text[: text.rfind("\n") + 1])
    return _parse_nics(reports[-1]) if reports else None


def _parse_nics(report: str) -> dict[str, tuple[str, str]]:
    nics = {}
    for entry in report.split():
        name, driver, mac = entry.split(",")
        nics[mac] = (name, driver)
    return nics


async def wait_for_nics(
    console: Path, predicate: Callable[[dict[str, tuple[str, str]]], bool]
) -> dict[str, tuple[str, str]]:
    """Wait until the guest's latest NIC report satisfies ``predicate``.

    The serial log is followed like a console's (:class:`qctl.Console` reads any file QEMU
    appends to; inotify wakes it, nothing polls). Only the latest report counts, so an
    old one never answers for the present. Bound the wait with ``asyncio.timeout()``.
    """
    async with Console(console, console.with_name("unused.sock")) as reader:
        pending = b""
        latest: dict[str, tuple[str, str]] | None = None
        while True:
            *lines, pending = (pending + await reader.read_bytes()).split(b"\n")
            for line in lines:
                found = NICS_RE.match(line.decode(errors="replace").rstrip("\r"))
                if found:
                    latest = _parse_nics(found.group(1))
            if latest is not None and predicate(latest):
                return latest


async def wait_until(condition: Callable[[], bool]) -> None:
    """Poll ``condition`` every 50 ms until it holds; bound it with ``asyncio.timeout()``."""
    while True:
        if condition():
            return
        await asyncio.sleep(0.05)


def guest_domain_xml(
    name: str, devices: str, *, console: Path, machine: str = "q35", kernel: Path | None = None
) -> str:
    """A TCG domain booting the bundled guest, with ``devices`` (XML) and a serial log."""
    base = guest_dir()
    kernel = kernel or (base / "vmlinux" if (base / "vmlinux").is_file() else base / "vmlinuz")
    return f"""<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='{machine}'>hvm</type>
    <kernel>{kernel}</kernel>
    <initrd>{base / "initrd.img"}</initrd>
    <cmdline>console=ttyS0 quiet panic=-1</cmdline>
  </os>
  <devices>
    <serial type='file'><source path='{console}'/></serial>
{devices}
  </devices>
</domain>
"""


def pretend_running(root: Path, name: str) -> None:
    """Give domain ``name`` of state root ``root`` a status file naming this (live) test
    process as its QEMU, so the state root counts it as running."""
    from qctl.qemu.process import process_identity
    from qctl.qemu.state import StateRoot

    me = process_identity(os.getpid())
    directory = StateRoot(root).domain(name)
    directory.make()
    directory.write_status({"name": name, "pid": me.pid, "start_time": me.start_time})


def gone_within(pid: int, seconds: float) -> bool:
    """Whether ``pid`` is gone or a zombie (PID 1 reaps orphans late) within ``seconds``."""
    try:
        identity = process_identity(pid)
    except ProcessError:  # gone (and reaped) already
        return True
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not is_alive(identity):
            return True
        time.sleep(0.02)
    return False


def processes_naming(marker: str) -> list[int]:
    """The processes whose command line contains ``marker`` (a QEMU's pid file, say): the
    checks' own scan of /proc, independent of the driver's, so a bug there cannot hide an
    orphan from them."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if marker.encode() in (proc / "cmdline").read_bytes():
                    found.append(int(proc.name))
            except OSError:
                continue
    return found


async def when_listening(
    incoming: Callable[[Callable[[], None]], Awaitable[Domain]],
) -> asyncio.Future[Domain]:
    """Run ``incoming(ready)`` — a ``Domain.incoming`` given ``ready=`` — in the background
    and return it once QEMU listens for the migration; if it ends before, raise why."""
    ready = asyncio.Event()
    arriving = asyncio.ensure_future(incoming(ready.set))
    waiter = asyncio.ensure_future(ready.wait())
    try:
        await asyncio.wait({arriving, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
    if arriving.done():
        arriving.result()  # it failed before listening: say why
    return arriving
