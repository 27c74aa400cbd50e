"""Migration without QEMU: the refusals, and the QMP conversation of each path against a
fake QEMU that plays a scripted migration (events and ``query-migrate`` answers)."""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import AsyncIterator
from typing import Any

import pytest
from fakeqmp import FakeQMPServer

from qctl import MigrationError, parse_domain
from qctl.conf import DomainDef, InterfaceDef
from qctl.qemu.ledger import DeviceKind, EntryState, LedgerEntry
from qctl.qemu.migration import (
    MIGRATION_EVENTS,
    MigrationProgress,
    cancel_migration,
    check_migratable,
    check_outgoing,
    check_uri,
    migrate_in,
    migrate_out,
    watch_progress,
)
from qctl.qemu.monitor import Monitor
from qctl.qmp import QMPClient, connect_qmp

URI = "tcp:192.0.2.2:49152"


def _domain(devices: str) -> DomainDef:
    return parse_domain(
        "<domain type='qemu'><name>m</name><memory unit='MiB'>64</memory>"
        "<os><type machine='q35'>hvm</type></os>"
        f"<devices>{devices}</devices></domain>",
        live=True,
    )


STANDBY = (
    "<interface type='bridge'><mac address='52:54:00:00:00:01'/><source bridge='br0'/>"
    "<model type='virtio'/><teaming type='persistent'/><alias name='ua-standby'/></interface>"
)
STANDIN = (
    "<interface type='bridge'><mac address='52:54:00:00:00:01'/><source bridge='br0'/>"
    "<model type='e1000e'/><teaming type='transient' persistent='ua-standby'/>"
    "<alias name='ua-primary'/></interface>"
)
VF = (
    "<interface type='hostdev' managed='yes'><mac address='52:54:00:00:00:01'/>"
    "<source><address type='pci' domain='0x0000' bus='0x03' slot='0x02' function='0x1'/>"
    "</source>{teaming}<alias name='ua-vf'/></interface>"
)
PAIR = _domain(STANDBY + STANDIN)


# -- refusals that need no QEMU ------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("exec:cat > /tmp/x", "refusing migration URI 'exec:cat > /tmp/x': exec: runs a shell"),
        ("tcp:host", "bad migration URI 'tcp:host': expected tcp:HOST:PORT"),
        ("tcp:host:70000", "bad migration URI 'tcp:host:70000'"),
        ("rdma:host:1", "unsupported migration URI 'rdma:host:1'"),
        ("unix:", "unsupported migration URI 'unix:'"),
    ],
)
def test_uri_refused(uri: str, message: str) -> None:
    with pytest.raises(MigrationError) as caught:
        check_uri(uri)
    assert message in str(caught.value)
    assert caught.value.stage == "check"


@pytest.mark.parametrize("uri", [URI, "tcp:[2001:db8::1]:4444", "unix:/run/qctl/m.sock"])
def test_uri_accepted(uri: str) -> None:
    assert check_uri(uri) == uri


def test_plain_hostdev_refused() -> None:
    live = _domain(
        "<hostdev mode='subsystem' type='pci' managed='yes'><source>"
        "<address domain='0x0000' bus='0x03' slot='0x00' function='0x0'/></source>"
        "<alias name='hostdev0'/></hostdev>"
    )
    with pytest.raises(MigrationError) as caught:
        check_migratable(live)
    assert str(caught.value) == (
        "cannot migrate 'm': hostdev hostdev0 (0000:03:00.0) is a host device QEMU cannot "
        "migrate; only the transient half of a failover pair (<teaming type='transient'>) "
        "can be unplugged for a migration"
    )


def test_hostdev_interface_without_teaming_refused() -> None:
    with pytest.raises(MigrationError) as caught:
        check_migratable(_domain(VF.format(teaming="")))
    assert "hostdev interface ua-vf is not the transient half of a failover pair" in str(
        caught.value
    )


def test_transient_primary_without_its_standby_refused() -> None:
    full = _domain(
        STANDBY + VF.format(teaming="<teaming type='transient' persistent='ua-standby'/>")
    )
    # the standby was detached: only the VF is left
    items = tuple(
        i
        for i in full.devices.items
        if not (isinstance(i, InterfaceDef) and i.alias == "ua-standby")
    )
    live = dataclasses.replace(full, devices=dataclasses.replace(full.devices, items=items))
    with pytest.raises(MigrationError) as caught:
        check_migratable(live)
    assert str(caught.value) == (
        "cannot migrate 'm': interface ua-vf is the transient half of a failover pair whose "
        "standby 'ua-standby' is not in the domain; without it QEMU does not unplug the primary"
    )


def test_device_not_settled_refused() -> None:
    entry = LedgerEntry(alias="ua-primary", kind=DeviceKind.INTERFACE, state=EntryState.DETACHING)
    with pytest.raises(MigrationError, match="device ua-primary is detaching; wait for it"):
        check_migratable(PAIR, [entry])


def test_failover_pairs_found() -> None:
    pairs = check_migratable(PAIR)
    assert [(p.standby, p.primary) for p in pairs] == [("ua-standby", "ua-primary")]


# -- a fake QEMU that migrates -------------------------------------------------------------


class FakeMigration:
    """Scripted migration: ``migrate`` starts playing ``script``, a list of (events to emit,
    the ``query-migrate`` answer from then on)."""

    def __init__(
        self,
        server: FakeQMPServer,
        script: list[tuple[list[tuple[str, dict[str, Any]]], dict[str, Any]]],
    ) -> None:
        self.server = server
        self.script = script
        self.state: dict[str, Any] = {}
        self.run_state = "running"
        self.peripherals = ["ua-standby", "ua-primary"]
        self.player: asyncio.Task[None] | None = None
        self.started = asyncio.Event()
        for name in (
            "migrate-set-capabilities",
            "migrate-set-parameters",
            "migrate",
            "migrate-incoming",
            "migrate_cancel",
            "query-migrate",
            "query-status",
            "qom-list",
            "cont",
        ):
            server.handlers[name] = self._handler(name)

    def _handler(self, name: str) -> Any:
        async def handle(arguments: dict[str, Any]) -> dict[str, Any]:
            if name in ("migrate", "migrate-incoming"):
                self.player = asyncio.create_task(self._play())
                self.started.set()
            elif name == "migrate_cancel":
                if self.player is not None:
                    self.player.cancel()
                self.state = {"status": "cancelled"}
                await self.server.emit("MIGRATION", {"status": "cancelled"})
            elif name == "query-migrate":
                return {"return": self.state}
            elif name == "query-status":
                return {"return": {"status": self.run_state, "running": False}}
            elif name == "qom-list":
                return {"return": [{"name": p, "type": "child<x>"} for p in self.peripherals]}
            elif name == "cont":
                self.run_state = "running"
            return {"return": {}}

        return handle

    async def _play(self) -> None:
        for events, state in self.script:
            await asyncio.sleep(0.01)
            self.state = state
            for event, data in events:
                await self.server.emit(event, data)


def _ram(transferred: int, remaining: int) -> dict[str, Any]:
    return {
        "transferred": transferred,
        "remaining": remaining,
        "total": 1000,
        "dirty-sync-count": 1,
        "dirty-pages-rate": 5,
        "mbps": 8.0,
    }


SUCCESS: list[tuple[list[tuple[str, dict[str, Any]]], dict[str, Any]]] = [
    ([("MIGRATION", {"status": "setup"})], {"status": "setup"}),
    (
        [("UNPLUG_PRIMARY", {"device-id": "ua-primary"}), ("MIGRATION", {"status": "wait-unplug"})],
        {"status": "wait-unplug"},
    ),
    (
        [("MIGRATION", {"status": "active"}), ("MIGRATION_PASS", {"pass": 1})],
        {"status": "active", "ram": _ram(400, 600), "expected-downtime": 300},
    ),
    ([("MIGRATION_PASS", {"pass": 2})], {"status": "active", "ram": _ram(900, 100)}),
    (
        [("MIGRATION", {"status": "completed"})],
        {"status": "completed", "ram": _ram(1000, 0), "total-time": 812, "downtime": 11},
    ),
]


@pytest.fixture
async def fake(sockdir: str) -> AsyncIterator[tuple[FakeQMPServer, QMPClient]]:
    async with FakeQMPServer(os.path.join(sockdir, "qmp")) as server:
        client = await connect_qmp(server.path)
        try:
            yield server, client
        finally:
            await client.aclose()


def _sent(server: FakeQMPServer) -> list[tuple[str, dict[str, Any]]]:
    return [(c, a) for c, a in server.received if c not in ("qmp_capabilities", "query-migrate")]


async def test_outgoing_follows_unplug_and_passes_to_completion(
    fake: tuple[FakeQMPServer, QMPClient],
) -> None:
    server, client = fake
    FakeMigration(server, SUCCESS)
    seen: list[MigrationProgress] = []
    released: list[bool] = []

    async def release() -> None:
        released.append(True)

    with client.events(MIGRATION_EVENTS) as events:
        outcome = await migrate_out(
            Monitor(client),
            events,
            URI,
            bandwidth=10**8,
            downtime_ms=300,
            progress=seen.append,
            release_source=release,
            poll_interval=0.005,
        )
    assert _sent(server) == [
        ("migrate-set-capabilities", {"capabilities": [{"capability": "events", "state": True}]}),
        ("migrate-set-parameters", {"max-bandwidth": 10**8, "downtime-limit": 300}),
        ("migrate", {"uri": URI}),
    ]
    assert outcome.unplugged == ("ua-primary",)
    assert (outcome.total_time_ms, outcome.downtime_ms, outcome.transferred) == (812, 11, 1000)
    assert outcome.passes == 2
    assert released == [True]
    assert "wait-unplug" in [p.status for p in seen]
    assert seen[-1].status == "completed" and seen[-1].unplugged == ("ua-primary",)
    active = next(p for p in seen if p.status == "active")
    assert (active.total, active.dirty_rate, active.mbps) == (1000, 5, 8.0)


async def test_a_fast_migration_notes_every_event_sent_before_completed(
    fake: tuple[FakeQMPServer, QMPClient],
) -> None:
    """QEMU's unplug, passes and completion in one burst, all before ``query-migrate``
    first says ``completed``: none is lost."""
    server, client = fake
    burst: list[tuple[str, dict[str, Any]]] = [
        ("MIGRATION", {"status": "wait-unplug"}),
        ("UNPLUG_PRIMARY", {"device-id": "ua-primary"}),
        ("MIGRATION_PASS", {"pass": 1}),
        ("MIGRATION_PASS", {"pass": 2}),
        ("MIGRATION", {"status": "completed"}),
    ]
    FakeMigration(server, [(burst, {"status": "completed", "ram": _ram(1000, 0), "total-time": 5})])
    with client.events(MIGRATION_EVENTS) as events:
        outcome = await migrate_out(Monitor(client), events, URI, poll_interval=0.005)
    assert outcome.unplugged == ("ua-primary",)
    assert outcome.passes == 2  # from MIGRATION_PASS, not ram's dirty-sync-count (1)


async def test_outgoing_failure_keeps_the_source(fake: tuple[FakeQMPServer, QMPClient]) -> None:
    server, client = fake
    FakeMigration(
        server,
        [
            ([("UNPLUG_PRIMARY", {"device-id": "ua-primary"})], {"status": "wait-unplug"}),
            (
                [("MIGRATION", {"status": "failed"})],
                {
                    "status": "failed",
                    "error-desc": "Unable to write to socket: Connection reset by peer",
                },
            ),
        ],
    )
    released: list[bool] = []

    async def release() -> None:
        released.append(True)

    with client.events(MIGRATION_EVENTS) as events, pytest.raises(MigrationError) as caught:
        await migrate_out(Monitor(client), events, URI, release_source=release, poll_interval=0.005)
    assert str(caught.value) == (
        "migration failed on the transfer side: Unable to write to socket: Connection reset by peer"
    )
    assert caught.value.stage == "transfer"
    assert released == []


async def test_cancelled_task_cancels_the_migration(fake: tuple[FakeQMPServer, QMPClient]) -> None:
    server, client = fake
    migration = FakeMigration(
        server, [([("MIGRATION", {"status": "wait-unplug"})], {"status": "wait-unplug"})]
    )
    with client.events(MIGRATION_EVENTS) as events:
        task = asyncio.create_task(migrate_out(Monitor(client), events, URI, poll_interval=0.005))
        await migration.started.wait()
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert [c for c, _ in _sent(server)][-2:] == ["migrate", "migrate_cancel"]


async def test_timeout_cancels_the_migration(fake: tuple[FakeQMPServer, QMPClient]) -> None:
    server, client = fake
    FakeMigration(server, [([("MIGRATION", {"status": "wait-unplug"})], {"status": "wait-unplug"})])
    with client.events(MIGRATION_EVENTS) as events, pytest.raises(MigrationError) as caught:
        await migrate_out(Monitor(client), events, URI, timeout=0.2, poll_interval=0.005)
    assert str(caught.value) == (
        f"migration to {URI} did not complete within 0.2s; cancelled (the source keeps running)"
    )
    assert "migrate_cancel" in [c for c, _ in server.received]


async def test_cancel_from_another_process_ends_the_job(
    fake: tuple[FakeQMPServer, QMPClient],
) -> None:
    server, client = fake
    migration = FakeMigration(
        server, [([("MIGRATION", {"status": "active"})], {"status": "active"})]
    )
    other = await connect_qmp(server.path)
    try:
        with client.events(MIGRATION_EVENTS) as events:
            task = asyncio.create_task(
                migrate_out(Monitor(client), events, URI, poll_interval=0.005)
            )
            await migration.started.wait()
            assert await cancel_migration(Monitor(other)) == "cancelled"
            with pytest.raises(MigrationError, match="migration cancelled on the transfer side"):
                await task
    finally:
        await other.aclose()


async def test_qemu_blockers_refused(fake: tuple[FakeQMPServer, QMPClient]) -> None:
    server, client = fake
    migration = FakeMigration(server, [])
    migration.state = {"blocked-reasons": ["VFIO device doesn't support migration"]}
    with pytest.raises(MigrationError) as caught:
        await check_outgoing(Monitor(client), PAIR)
    assert str(caught.value) == (
        "cannot migrate 'm': QEMU blocks it: VFIO device doesn't support migration"
    )


async def test_pair_never_negotiated_is_a_warning(fake: tuple[FakeQMPServer, QMPClient]) -> None:
    server, client = fake
    migration = FakeMigration(server, [])
    assert await check_outgoing(Monitor(client), PAIR) == []
    migration.peripherals = ["ua-standby"]  # QEMU still hides the primary
    [warning] = await check_outgoing(Monitor(client), PAIR)
    assert warning.startswith(
        "failover pair ua-standby/ua-primary: the guest has not negotiated failover"
    )


async def test_incoming_listens_waits_and_resumes(fake: tuple[FakeQMPServer, QMPClient]) -> None:
    server, client = fake
    migration = FakeMigration(
        server,
        [
            ([("MIGRATION", {"status": "active"})], {"status": "active"}),
            ([("MIGRATION", {"status": "completed"})], {"status": "completed"}),
        ],
    )
    migration.run_state = "inmigrate"
    with client.events(MIGRATION_EVENTS) as events:
        await migrate_in(Monitor(client), events, "tcp:0.0.0.0:49152", poll_interval=0.005)
    assert [c for c, _ in _sent(server)] == [
        "query-status",
        "migrate-set-capabilities",
        "migrate-incoming",
        "cont",
    ]
    assert migration.run_state == "running"


async def test_incoming_refused_when_qemu_is_not_waiting(
    fake: tuple[FakeQMPServer, QMPClient],
) -> None:
    server, client = fake
    FakeMigration(server, [])
    with client.events(MIGRATION_EVENTS) as events, pytest.raises(MigrationError) as caught:
        await migrate_in(Monitor(client), events, "tcp:0.0.0.0:49152")
    assert str(caught.value) == (
        "QEMU is running, not waiting for a migration (start it with -incoming defer)"
    )


async def test_incoming_qemu_gone(fake: tuple[FakeQMPServer, QMPClient]) -> None:
    server, client = fake
    migration = FakeMigration(
        server, [([("MIGRATION", {"status": "active"})], {"status": "active"})]
    )
    migration.run_state = "inmigrate"
    with client.events(MIGRATION_EVENTS) as events:
        task = asyncio.create_task(
            migrate_in(Monitor(client), events, "tcp:0.0.0.0:49152", poll_interval=0.005)
        )
        await migration.started.wait()
        await server.drop_connections()  # QEMU exits when the stream breaks
        with pytest.raises(MigrationError, match="lost the incoming QEMU during the migration"):
            await task


async def test_watch_progress_ends_with_the_migration(
    fake: tuple[FakeQMPServer, QMPClient],
) -> None:
    server, client = fake
    migration = FakeMigration(server, [])
    migration.state = {"status": "active", "ram": _ram(10, 990)}
    statuses = []
    async for item in watch_progress(Monitor(client), interval=0.005):
        statuses.append((item.status, item.remaining))
        migration.state = {"status": "completed", "ram": _ram(1000, 0)}
    assert statuses == [("active", 990), ("completed", 0)]
