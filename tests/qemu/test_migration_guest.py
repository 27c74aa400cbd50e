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
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import guest_domain_xml, unique, wait_until
from twohost import TwoHosts

from qctl import Domain, MigrationError, parse_domain
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
from qctl.qemu.startup import HostPaths, launch
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


def _trio(console: Path) -> bool:
    """The latest NIC report on ``console`` lists the three halves of the failover pair."""
    text = console.read_text(errors="replace") if console.exists() else ""
    lines = [line for line in text.splitlines() if line.startswith("QCTL-NICS:")]
    if not lines or not text.endswith("\n"):
        return False
    entries = [entry.split(",") for entry in lines[-1].split()[1:]]
    drivers = sorted(driver for _, driver, mac in entries if mac == MAC)
    return drivers == ["e1000e", "virtio_net", "virtio_net"]


async def _wait_trio(console: Path) -> None:
    await wait_until(lambda: _trio(console))


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
    name = unique("mig")
    console_a, console_b = tmp_path / "serial-a.log", tmp_path / "serial-b.log"
    defn = parse_domain(guest_domain_xml(name, DEVICES, console=console_a))
    with rig.a.entered():
        source = await Domain.start(defn, state_root=rig.a.state_root)
    destination: Domain | None = None
    try:
        async with asyncio.timeout(BOOT_TIMEOUT):
            await _wait_trio(console_a)

        travelling = migratable_definition(source.live, source.config, source.ledger)
        assert travelling.os.machine == "pc-q35-7.2"
        assert [i.target_dev for i in travelling.interfaces] == [None, None]
        assert [str(i.address) for i in travelling.interfaces] == [
            str(i.address) for i in source.live.interfaces
        ]
        caps = await source.capabilities()
        with rig.b.entered():
            launched = await launch(
                _on_console(travelling, console_b),
                caps,
                qemu_binary,
                StateRoot(rig.b.state_root),
                None,
                HostPaths(),
                incoming=True,
            )
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
                    target,
                    incoming_events,
                    uri,
                    timeout=MIGRATION_TIMEOUT,
                    ready=listening.set,
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
        assert progress[-1].status == "completed" and progress[-1].total > 0
        assert await target.status() == "running"
        # host A: no QEMU, tap or state left
        assert not source.running
        assert Domain.list(rig.a.state_root) == []
        assert rig.a.links() == {"lo", rig.a.veth, rig.a.bridge}
        # host B: its books hold both halves, its taps are on its bridge
        await launched.client.aclose()
        with rig.b.entered():
            destination = await Domain.connect(name, state_root=rig.b.state_root)
        assert {entry.alias for entry in destination.ledger} == {"ua-standby", "ua-primary"}
        assert "persistent='ua-standby'" in destination.xml().replace('"', "'")
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
    name = unique("mig")
    console = tmp_path / "serial-a.log"
    defn = parse_domain(guest_domain_xml(name, DEVICES, console=console))
    with rig.a.entered():
        source = await Domain.start(defn, state_root=rig.a.state_root)
    try:
        async with asyncio.timeout(BOOT_TIMEOUT):
            await _wait_trio(console)
        with (
            source.monitor.client.events(MIGRATION_EVENTS) as events,
            pytest.raises(MigrationError) as caught,
        ):
            await migrate_out(source.monitor, events, f"tcp:{rig.b.address}:{PORT}", timeout=60)
        assert caught.value.stage == "transfer"
        assert "failed" in str(caught.value)
        assert await source.monitor.status() == "running"
        async with asyncio.timeout(30):  # QEMU re-plugs the primary; the guest sees it
            await _wait_trio(console)
        assert {entry.alias for entry in source.ledger} == {"ua-standby", "ua-primary"}
    finally:
        with rig.a.entered():
            await source.stop(force=True)
