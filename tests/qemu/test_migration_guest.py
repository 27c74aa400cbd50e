"""A failover pair live-migrates between two hosts (network namespaces) with the bundled guest.

Host A runs the guest with a virtio standby and an e1000e standing in for the VF, both on
its bridge ``br0``; the guest reports the failover trio (master, standby, primary). Host B
starts QEMU from the definition that travels, with ``-incoming defer``; the guest moves
over TCP between 192.0.2.1 and 192.0.2.2. QEMU unplugs the primary on A (UNPLUG_PRIMARY,
``wait-unplug``), the source is quit and released at once, and on B the guest keeps
running and reports its primary again. The times are printed (``pytest -s``).

Until the driver has ``Domain.migrate``/``Domain.incoming``, the test wires
:mod:`qctl.qemu.migration` itself: ``Domain.start`` on A, ``startup.launch(incoming=True)``
on B.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import guest_domain_xml, unique, wait_until
from twohost import TwoHosts

from qctl import Domain, MigrationError, StateError, parse_domain
from qctl.conf import DomainDef, SerialDef
from qctl.qemu.migratable import migratable_definition
from qctl.qemu.migration import (
    MIGRATION_EVENTS,
    MigrationProgress,
    check_outgoing,
    migrate_in,
    migrate_out,
)
from qctl.qemu.monitor import Monitor
from qctl.qemu.startup import HostPaths, Launched, launch
from qctl.qemu.state import StateRoot

pytestmark = [pytest.mark.qemu, pytest.mark.guest]

BOOT_TIMEOUT = 90.0
MIGRATION_TIMEOUT = 120.0
MAC = "52:54:00:20:00:01"
PORT = 49152

DEVICES = f"""
    <interface type='bridge'>
      <mac address='{MAC}'/><source bridge='br0'/><model type='virtio'/>
      <teaming type='persistent'/><alias name='ua-standby'/>
    </interface>
    <interface type='bridge'>
      <mac address='{MAC}'/><source bridge='br0'/><model type='e1000e'/>
      <teaming type='transient' persistent='ua-standby'/><alias name='ua-primary'/>
    </interface>
"""


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


async def _launch_destination(rig: TwoHosts, source: Domain, console: Path) -> Launched:
    """QEMU on host B from the source's travelling definition, waiting for the migration."""
    travelling = migratable_definition(source.live, source.config, source.ledger)
    with rig.b.entered():
        return await launch(
            _on_console(travelling, console),
            await source.capabilities(),
            source.binary,
            StateRoot(rig.b.state_root),
            None,
            HostPaths(),
            incoming=True,
        )


async def _destination_cleaned(rig: TwoHosts, name: str) -> None:
    """Host B after a failed incoming migration: its QEMU exited; the next look releases
    what its books held, and nothing is left."""
    with rig.b.entered(), pytest.raises(StateError, match="not running"):
        await Domain.connect(name, state_root=rig.b.state_root)
    assert Domain.list(rig.b.state_root) == []
    assert rig.b.links() == {"lo", rig.b.veth, rig.b.bridge}


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
        travelling = migratable_definition(source.live, source.config, source.ledger)
        assert travelling.os.machine == "pc-q35-7.2"
        assert [i.target_dev for i in travelling.interfaces] == [None, None]
        assert [i.address for i in travelling.interfaces] == [
            i.address for i in source.live.interfaces
        ]
        launched = await _launch_destination(rig, source, console_b)
        target = Monitor(launched.client)
        assert await target.status() == "inmigrate"
        uri = f"tcp:{rig.b.address}:{PORT}"

        async def release_source() -> None:
            with rig.a.entered():
                await source.stop(force=True)

        progress: list[MigrationProgress] = []
        with (
            launched.client.events(MIGRATION_EVENTS) as incoming_events,
            source.monitor.client.events(MIGRATION_EVENTS) as outgoing_events,
        ):
            assert await check_outgoing(source.monitor, source.live, source.ledger) == []
            listening = asyncio.Event()
            incoming = asyncio.create_task(
                migrate_in(
                    target, incoming_events, uri, timeout=MIGRATION_TIMEOUT, ready=listening.set
                )
            )
            await listening.wait()
            started = time.monotonic()
            outcome = await migrate_out(
                source.monitor,
                outgoing_events,
                uri,
                timeout=MIGRATION_TIMEOUT,
                progress=progress.append,
                release_source=release_source,
            )
            await incoming
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
        assert await target.status() == "running"
        # host A: no QEMU, tap or state left
        assert not source.running
        assert Domain.list(rig.a.state_root) == []
        assert rig.a.links() == {"lo", rig.a.veth, rig.a.bridge}
        # host B: its books hold both halves, its two taps are on its bridge
        await launched.client.aclose()
        with rig.b.entered():
            destination = await Domain.connect(name, state_root=rig.b.state_root)
        assert {entry.alias for entry in destination.ledger} == {"ua-standby", "ua-primary"}
        assert 'persistent="ua-standby"' in destination.xml()
        assert len(rig.b.links() - {"lo", rig.b.veth, rig.b.bridge}) == 2
    finally:
        with rig.a.entered():
            await source.stop(force=True)
        if destination is not None:
            with rig.b.entered():
                await destination.stop(force=True)


async def test_destination_not_listening_leaves_the_source_running(
    rig: TwoHosts, guest_paths: tuple[Path, Path], qemu_binary: str, tmp_path: Path
) -> None:
    console = tmp_path / "serial-a.log"
    source = await _start_source(rig, console)
    try:
        with (
            source.monitor.client.events(MIGRATION_EVENTS) as events,
            pytest.raises(MigrationError) as caught,
        ):
            await migrate_out(source.monitor, events, f"tcp:{rig.b.address}:{PORT}", timeout=60)
        assert caught.value.stage == "transfer"
        assert str(caught.value).startswith("migration failed on the transfer side: ")
        assert await source.monitor.status() == "running"
        assert _trio(console)
        assert {entry.alias for entry in source.ledger} == {"ua-standby", "ua-primary"}
    finally:
        with rig.a.entered():
            await source.stop(force=True)


@pytest.mark.parametrize("how", ["destination-killed", "aborted"])
async def test_failed_migration_replugs_the_primary_on_the_source(
    how: str, rig: TwoHosts, guest_paths: tuple[Path, Path], qemu_binary: str, tmp_path: Path
) -> None:
    """Mid-transfer (bandwidth capped so there is time), the destination QEMU is killed or
    the job is cancelled: the source keeps running, QEMU re-plugs the primary and the guest
    reports it again, the books are unchanged; the destination leaves nothing behind."""
    console_a, console_b = tmp_path / "serial-a.log", tmp_path / "serial-b.log"
    source = await _start_source(rig, console_a)
    ledger_before = [entry.to_json() for entry in source.ledger]
    try:
        launched = await _launch_destination(rig, source, console_b)
        uri = f"tcp:{rig.b.address}:{PORT}"
        moving = asyncio.Event()

        def watch(progress: MigrationProgress) -> None:
            if progress.status == "active" and progress.transferred > 4 << 20:
                moving.set()

        with (
            launched.client.events(MIGRATION_EVENTS) as incoming_events,
            source.monitor.client.events(MIGRATION_EVENTS) as outgoing_events,
        ):
            listening = asyncio.Event()
            incoming = asyncio.create_task(
                migrate_in(
                    Monitor(launched.client),
                    incoming_events,
                    uri,
                    timeout=MIGRATION_TIMEOUT,
                    ready=listening.set,
                )
            )
            await listening.wait()
            outgoing = asyncio.create_task(
                migrate_out(
                    source.monitor,
                    outgoing_events,
                    uri,
                    timeout=MIGRATION_TIMEOUT,
                    bandwidth=8 << 20,
                    progress=watch,
                    poll_interval=0.1,
                )
            )
            async with asyncio.timeout(60):
                await moving.wait()
            if how == "aborted":
                outgoing.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await outgoing
            else:
                os.kill(launched.process.pid, signal.SIGKILL)
                with pytest.raises(MigrationError, match="migration failed on the transfer side"):
                    await outgoing
            with pytest.raises(MigrationError) as caught:
                await incoming
            assert caught.value.stage == "incoming"
        await launched.client.aclose()
        assert await source.monitor.status() == "running"
        async with asyncio.timeout(60):
            await _wait_replugged(console_a)
        assert [entry.to_json() for entry in source.ledger] == ledger_before
        await _destination_cleaned(rig, source.name)
    finally:
        with rig.a.entered():
            await source.stop(force=True)
