"""A failover pair live-migrates between two hosts (network namespaces) with the bundled guest.

Host A runs the guest with a virtio standby and an e1000e standing in for the VF, both on
its bridge ``br0``; the guest reports the failover trio (master, standby, primary). Host B
starts QEMU from the definition that travels, with ``-incoming defer``; the guest moves
over TCP between 192.0.2.1 and 192.0.2.2. QEMU unplugs the primary on A (UNPLUG_PRIMARY,
``wait-unplug``), the source is quit and released at once, and on B the guest keeps
running and reports its primary again. The times are printed (``pytest -s``).

``Domain.migrate`` drives the source, ``Domain.incoming`` the destination; one test does the
same through the ``qctl`` command, a process in each host.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import (
    QEMU_VERSIONS,
    guest_domain_xml,
    qemu_path,
    unique,
    wait_until,
    when_listening,
)
from twohost import FAILOVER_DEVICES as DEVICES
from twohost import FAILOVER_MAC as MAC
from twohost import Host, TwoHosts

from qctl import (
    Domain,
    JobAbortedError,
    MigrationError,
    MigrationProgress,
    UnsupportedError,
    format_xml,
    parse_domain,
)
from qctl.conf import DomainDef, SerialDef

pytestmark = [pytest.mark.qemu, pytest.mark.guest]

BOOT_TIMEOUT = 90.0
MIGRATION_TIMEOUT = 120.0
UNPLUG_SETTLE = 3.0  # seconds a guest's late unplug would take to show
PORT = 49152


TRIO = ["e1000e", "virtio_net", "virtio_net"]


def _reports(console: Path) -> list[list[str]]:
    """Every complete NIC report on ``console``: the sorted drivers of the pair's MAC."""
    text = console.read_text(errors="replace") if console.exists() else ""
    lines = text[: text.rfind("\n") + 1].splitlines()
    reports = []
    for line in lines:
        if line.startswith("QCTL-NICS:"):
            entries = [entry.split(",") for entry in line.split()[1:]]
            reports.append(sorted(driver for _, driver, mac in entries if mac == MAC))
    return reports


def _trio(console: Path) -> bool:
    """The latest NIC report on ``console`` lists the three halves of the failover pair."""
    reports = _reports(console)
    return bool(reports) and reports[-1] == TRIO


async def _wait_trio(console: Path) -> None:
    await wait_until(lambda: _trio(console))


async def _wait_replugged(console: Path) -> None:
    """Wait until the guest lost its primary and got it back (a trio after a pair)."""

    def replugged() -> bool:
        reports = _reports(console)
        lost = [i for i, report in enumerate(reports) if report == TRIO[1:]]
        return bool(lost) and TRIO in reports[lost[0] :]

    await wait_until(replugged)


async def _start_source(rig: TwoHosts, console: Path) -> Domain:
    """The guest on host A with its failover pair, booted and reporting the trio."""
    defn = parse_domain(guest_domain_xml(unique("mig"), DEVICES, console=console))
    with rig.a.entered():
        source = await Domain.start(defn, state_root=rig.a.state_root)
    try:
        async with asyncio.timeout(BOOT_TIMEOUT):
            await _wait_trio(console)
    except BaseException:
        with rig.a.entered():
            await source.stop(force=True)
        raise
    return source


def _travelling(source: Domain, console: Path) -> DomainDef:
    """The source's migratable definition, its serial port on ``console`` (each host has
    its own file)."""
    return _on_console(parse_domain(source.migratable_xml(), live=True), console)


async def _listen(rig: TwoHosts, defn: DomainDef, uri: str) -> asyncio.Future[Domain]:
    """``Domain.incoming`` on host B, once QEMU listens there (its taps made in B)."""
    with rig.b.entered():
        async with asyncio.timeout(60):
            return await when_listening(
                lambda ready: Domain.incoming(
                    defn,
                    uri,
                    state_root=rig.b.state_root,
                    timeout=MIGRATION_TIMEOUT,
                    ready=ready,
                )
            )


def _on_console(defn: DomainDef, console: Path) -> DomainDef:
    """``defn`` with its serial port writing to ``console`` (each host has its own file)."""
    items = tuple(
        dataclasses.replace(item, source_path=str(console)) if isinstance(item, SerialDef) else item
        for item in defn.devices.items
    )
    return dataclasses.replace(defn, devices=dataclasses.replace(defn.devices, items=items))


@pytest.fixture
def rig(private_netns: None, tun: None, tmp_path: Path) -> Iterator[TwoHosts]:
    hosts = TwoHosts(tmp_path)
    yield hosts
    hosts.close()


async def test_failover_pair_migrates_to_the_other_host(
    rig: TwoHosts, guest_paths: tuple[Path, Path], qemu_binary: str, tmp_path: Path
) -> None:
    console_a, console_b = tmp_path / "serial-a.log", tmp_path / "serial-b.log"
    source = await _start_source(rig, console_a)
    name = source.name
    destination: Domain | None = None
    try:
        travelling = _travelling(source, console_b)
        assert travelling.os.machine is not None and travelling.os.machine.startswith("pc-q35-")
        assert [i.target_dev for i in travelling.interfaces] == [None, None]
        assert [i.address for i in travelling.interfaces] == [
            i.address for i in source.live.interfaces
        ]
        uri = f"tcp:{rig.b.address}:{PORT}"
        arriving = await _listen(rig, travelling, uri)
        progress: list[MigrationProgress] = []
        started = time.monotonic()
        with rig.a.entered():
            outcome = await source.migrate(uri, timeout=MIGRATION_TIMEOUT, progress=progress.append)
        destination = await arriving
        migrated = time.monotonic()
        async with asyncio.timeout(60):
            await _wait_trio(console_b)
        primary_back = time.monotonic()
        print(
            f"\nmigration: {outcome.wall_time:.2f}s wall (QEMU: {outcome.total_time_ms} ms, "
            f"downtime {outcome.downtime_ms} ms, {outcome.transferred} bytes, "
            f"{outcome.passes} passes); primary reported on B "
            f"{primary_back - started:.2f}s after migrate ({primary_back - migrated:.2f}s "
            "after completion)"
        )

        assert outcome.unplugged == ("ua-primary",)
        assert outcome.total_time_ms and outcome.transferred > 0
        assert progress[-1].status == "completed" and progress[-1].total > 0
        assert destination.state.value == "running"
        # host A: no QEMU, tap or state left
        assert not source.running
        assert Domain.list(rig.a.state_root) == []
        assert rig.a.links() == {"lo", rig.a.veth, rig.a.bridge}
        # host B: its books hold both halves, its two taps are on its bridge, and another
        # process there sees the domain running
        assert {entry.alias for entry in destination.ledger} == {"ua-standby", "ua-primary"}
        assert 'persistent="ua-standby"' in destination.xml()
        assert len(rig.b.links() - {"lo", rig.b.veth, rig.b.bridge}) == 2
        [info] = Domain.list(rig.b.state_root)
        assert info.name == name and info.running and info.job is None
    finally:
        with rig.a.entered():
            await source.stop(force=True)
        if destination is not None:
            with rig.b.entered():
                await destination.stop(force=True)


async def test_the_command_line_migrates_and_reports_json(
    rig: TwoHosts, guest_paths: tuple[Path, Path], qemu_binary: str, tmp_path: Path
) -> None:
    console_a, console_b = tmp_path / "serial-a.log", tmp_path / "serial-b.log"
    source = await _start_source(rig, console_a)
    name = source.name
    await source.aclose()  # the command line takes over, a process in each host
    xml = tmp_path / "travelling.xml"
    try:
        dump = await _qctl(rig.a, "dumpxml", name, "--migratable", state=rig.a.state_root)
        xml.write_text(format_xml(_on_console(parse_domain(dump.stdout, live=True), console_b)))
        uri = f"tcp:{rig.b.address}:{PORT}"
        incoming = await asyncio.create_subprocess_exec(
            *rig.b.command(*QCTL, "migrate-incoming", str(xml), "--listen", uri, "--json",
                           "--state-dir", str(rig.b.state_root)),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert incoming.stderr is not None
        async with asyncio.timeout(60):
            assert b"listening on" in await incoming.stderr.readline()
        out = await _qctl(rig.a, "migrate", name, "--uri", uri, "--json", state=rig.a.state_root)
        lines = [json.loads(line) for line in out.stdout.splitlines()]  # JSON Lines
        assert all("progress" in line for line in lines[:-1])
        assert lines[-1]["result"] == "migrated" and lines[-1]["unplugged"] == ["ua-primary"]
        received, _ = await incoming.communicate()
        assert json.loads(received) == {
            "domain": name,
            "pid": json.loads(received)["pid"],
            "result": "received",
        }
        gone = await _qctl(rig.a, "list", "--json", state=rig.a.state_root)
        assert json.loads(gone.stdout) == []  # host A: the source is gone
        async with asyncio.timeout(60):
            await _wait_trio(console_b)
    finally:
        for host in (rig.a, rig.b):
            await _qctl(host, "stop", name, "--force", state=host.state_root, ok=False)


QCTL = [sys.executable, "-m", "qctl.cli.main"]


async def _qctl(host: Host, *args: str, state: Path, ok: bool = True) -> Completed:
    """``qctl ARGS`` in ``host`` (a process there), without blocking the event loop."""
    proc = await asyncio.create_subprocess_exec(
        *host.command(*QCTL, *args, "--state-dir", str(state)),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    result = Completed(proc.returncode or 0, out.decode(), err.decode())
    assert "Traceback" not in result.stderr, result.stderr
    if ok:
        assert result.returncode == 0, result.stderr
    return result


@dataclasses.dataclass
class Completed:
    returncode: int
    stdout: str
    stderr: str


async def test_destination_not_listening_leaves_the_source_running(
    rig: TwoHosts, guest_paths: tuple[Path, Path], qemu_binary: str, tmp_path: Path
) -> None:
    console = tmp_path / "serial-a.log"
    source = await _start_source(rig, console)
    ledger_before = [entry.to_json() for entry in source.ledger]
    try:
        with rig.a.entered(), pytest.raises(MigrationError) as caught:
            await source.migrate(f"tcp:{rig.b.address}:{PORT}", timeout=60)
        assert caught.value.stage == "transfer"
        assert str(caught.value).startswith("migration failed on the transfer side: ")
        assert await source.monitor.status() == "running"
        assert _trio(console)
        assert [entry.to_json() for entry in source.ledger] == ledger_before
        assert source.job is None
    finally:
        with rig.a.entered():
            await source.stop(force=True)


def _assert_kept(rig: TwoHosts, source: Domain, ledger_before: list[dict[str, object]]) -> None:
    """After a migration that did not happen: the source's books as they were, no job on
    it, and nothing left on host B (no domain, no link but its own)."""
    assert [entry.to_json() for entry in source.ledger] == ledger_before
    assert source.job is None
    assert Domain.list(rig.b.state_root) == []
    assert rig.b.links() == {"lo", rig.b.veth, rig.b.bridge}


@pytest.mark.parametrize("how", ["destination-killed", "aborted-from-another-process"])
async def test_failed_migration_replugs_the_primary_on_the_source(
    how: str, rig: TwoHosts, guest_paths: tuple[Path, Path], qemu_binary: str, tmp_path: Path
) -> None:
    """Mid-transfer (bandwidth capped so there is time), the destination QEMU is killed or
    `qctl job-abort` is run from another process: the source keeps running, QEMU re-plugs
    the primary and the guest reports it again, the books are unchanged; the destination
    leaves nothing behind."""
    console_a, console_b = tmp_path / "serial-a.log", tmp_path / "serial-b.log"
    source = await _start_source(rig, console_a)
    ledger_before = [entry.to_json() for entry in source.ledger]
    try:
        uri = f"tcp:{rig.b.address}:{PORT}"
        arriving = await _listen(rig, _travelling(source, console_b), uri)
        moving = asyncio.Event()

        def watch(progress: MigrationProgress) -> None:
            if progress.status == "active" and progress.transferred > 4 << 20:
                moving.set()

        with rig.a.entered():
            outgoing = asyncio.create_task(
                source.migrate(uri, timeout=MIGRATION_TIMEOUT, bandwidth=8 << 20, progress=watch)
            )
            async with asyncio.timeout(60):
                await moving.wait()
            assert source.job is not None and source.job.kind == "migrate"
            if how == "aborted-from-another-process":
                aborted = await _qctl(rig.a, "job-abort", source.name, state=rig.a.state_root)
                assert "aborted migrate" in aborted.stdout
                with pytest.raises(JobAbortedError):
                    await outgoing
            else:
                pid = int((rig.b.state_root / "domains" / source.name / "qemu.pid").read_text())
                os.kill(pid, signal.SIGKILL)
                with pytest.raises(MigrationError, match="migration failed on the transfer side"):
                    await outgoing
        with pytest.raises(MigrationError) as caught:
            await arriving
        assert caught.value.stage == "incoming"
        assert await source.monitor.status() == "running"
        async with asyncio.timeout(60):
            await _wait_replugged(console_a)
        _assert_kept(rig, source, ledger_before)
    finally:
        with rig.a.entered():
            await source.stop(force=True)


async def test_cancelled_in_wait_unplug_keeps_the_source_whole(
    rig: TwoHosts, guest_paths: tuple[Path, Path], qemu_binary: str, tmp_path: Path
) -> None:
    """The caller gives up while QEMU waits for the guest to unplug the primary (status
    ``wait-unplug``, before any RAM moved): the migration is cancelled, the source keeps
    running with its primary (re-plugged by QEMU if the guest had let it go), the books are
    unchanged and the destination leaves nothing."""
    console_a, console_b = tmp_path / "serial-a.log", tmp_path / "serial-b.log"
    source = await _start_source(rig, console_a)
    ledger_before = [entry.to_json() for entry in source.ledger]
    try:
        uri = f"tcp:{rig.b.address}:{PORT}"
        arriving = await _listen(rig, _travelling(source, console_b), uri)
        seen: list[str] = []
        outgoing: asyncio.Task[object] | None = None

        def watch(progress: MigrationProgress) -> None:
            seen.append(progress.status)
            if progress.status == "wait-unplug" and outgoing is not None:
                outgoing.cancel()

        with rig.a.entered():
            outgoing = asyncio.create_task(
                source.migrate(uri, timeout=MIGRATION_TIMEOUT, progress=watch)
            )
            with pytest.raises(asyncio.CancelledError):
                await outgoing
        assert seen[-1] == "wait-unplug", seen
        with pytest.raises(MigrationError):
            await arriving
        assert await source.monitor.status() == "running"
        assert "ua-primary" in await source.monitor.peripherals()
        async with asyncio.timeout(60):
            await _wait_trio(console_a)
        # An unplug the guest finished after a hurried cancel would show only later.
        await asyncio.sleep(UNPLUG_SETTLE)
        assert _trio(console_a), _reports(console_a)
        _assert_kept(rig, source, ledger_before)
    finally:
        with rig.a.entered():
            await source.stop(force=True)


async def test_migration_from_the_older_qemu_to_the_newer_and_not_back(
    rig: TwoHosts,
    guest_paths: tuple[Path, Path],
    qemu_version: str,
    qemu_binary: str,
    tmp_path: Path,
) -> None:
    """The commonest reason to migrate: off a host before upgrading it. A guest started on
    7.2 (its machine type resolved to the versioned ``pc-q35-7.2``) moves to 10.0 with its
    failover pair and keeps running; 10.0's ``pc-q35-10.0`` is not among 7.2's machine
    types (its probe says so), and the destination refuses before anything moves."""
    other = next(v for v in QEMU_VERSIONS if v != qemu_version)
    console_a, console_b = tmp_path / "serial-a.log", tmp_path / "serial-b.log"
    source = await _start_source(rig, console_a)
    destination: Domain | None = None
    try:
        travelling = _travelling(source, console_b)
        devices = dataclasses.replace(travelling.devices, emulator=qemu_path(other))
        travelling = dataclasses.replace(travelling, devices=devices)
        uri = f"tcp:{rig.b.address}:{PORT}"
        if qemu_version == "qemu10.0":  # newer to older: the machine type is unknown there
            with pytest.raises(UnsupportedError, match="not known to this QEMU") as refused:
                await _listen(rig, travelling, uri)
            print(f"\n10.0 -> 7.2 refused: {str(refused.value).splitlines()[0]}")
            assert await source.monitor.status() == "running"
            assert Domain.list(rig.b.state_root) == []
            return
        assert travelling.os.machine == "pc-q35-7.2"
        arriving = await _listen(rig, travelling, uri)
        with rig.a.entered():
            outcome = await source.migrate(uri, timeout=MIGRATION_TIMEOUT)
        destination = await arriving
        print(f"\n7.2 -> 10.0: {outcome.wall_time:.2f}s wall, downtime {outcome.downtime_ms} ms")
        async with asyncio.timeout(60):
            await _wait_trio(console_b)
        assert outcome.unplugged == ("ua-primary",)
        assert destination.runtime.binary == qemu_path(other)
        assert Domain.list(rig.a.state_root) == []
    finally:
        with rig.a.entered():
            await source.stop(force=True)
        if destination is not None:
            with rig.b.entered():
                await destination.stop(force=True)
