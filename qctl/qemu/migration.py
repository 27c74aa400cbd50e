"""Live migration, outgoing and incoming, failover-aware.

Functions over explicit collaborators — a :class:`~qctl.qemu.monitor.Monitor`, a stream of
QMP events subscribed *before* the call (:data:`MIGRATION_EVENTS`), the live definition and
ledger, callbacks for progress and for releasing the source — so the job that runs them
(``Domain.migrate``, ``Domain.incoming``) owns locking, books and the job record.

Outgoing (:func:`migrate_out`), after :func:`check_outgoing`:

1. refuse what cannot move (:func:`check_migratable`): a plain ``<hostdev>``, a hostdev
   interface that is not the transient half of a failover pair, a transient half whose
   standby is gone, a device still being attached or detached, QEMU's own blockers
   (``query-migrate``'s ``blocked-reasons``), an ``exec:`` URI; warn about a failover
   pair the guest never negotiated (its primary is hidden, so there is nothing to unplug
   and no fast path on either host);
2. the capabilities (:data:`CAPABILITIES`, the same on both sides) and parameters;
3. ``migrate``; then follow the events and ``query-migrate``: QEMU unplugs each primary
   (UNPLUG_PRIMARY, status ``wait-unplug``) and the guest falls back to the standby, then
   RAM passes (MIGRATION_PASS) until ``completed``;
4. the source is ``postmigrate``: ``release_source`` quits it and releases its host side.

On ``failed``/``cancelled``, a timeout or the caller's cancellation, QEMU re-plugs the
primary itself and the source keeps running; a timeout or cancellation first sends
``migrate_cancel`` (shielded) and waits for QEMU to settle.

Incoming (:func:`migrate_in`): QEMU was started with ``-incoming defer`` and is
``inmigrate``; set the same capabilities, ``migrate-incoming``, wait for ``completed``,
then ``cont``. QEMU keeps the primary hidden until the guest's driver negotiates failover
(FAILOVER_NEGOTIATED), then plugs it. On any failure the caller removes the destination.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping

from qctl.conf import DomainDef, InterfaceDef, InterfaceType, TeamingType
from qctl.errors import MigrationError, QMPCommandError, QMPError
from qctl.qemu.ledger import EntryState, LedgerEntry
from qctl.qemu.monitor import MigrationInfo, Monitor
from qctl.qmp import QMPEvent
from qctl.record import record

__all__ = [
    "CAPABILITIES",
    "MIGRATION_EVENTS",
    "FailoverPair",
    "MigrationOutcome",
    "MigrationProgress",
    "cancel_migration",
    "check_migratable",
    "check_outgoing",
    "check_uri",
    "failover_pairs",
    "migrate_in",
    "migrate_out",
    "watch_progress",
]

log = logging.getLogger(__name__)

#: the events a migration follows; subscribe to them before calling migrate_out/migrate_in
MIGRATION_EVENTS = ("MIGRATION", "MIGRATION_PASS", "UNPLUG_PRIMARY", "FAILOVER_NEGOTIATED")
#: migration capabilities set on both sides: MIGRATION/MIGRATION_PASS events
CAPABILITIES: Mapping[str, bool] = {"events": True}
#: how often query-migrate is read while a migration runs (seconds)
POLL_INTERVAL = 0.5
#: how long a cancelled migration may take to settle before we stop waiting (seconds)
CANCEL_TIMEOUT = 10.0

_DONE = "completed"
_FAILED = frozenset({"failed", "cancelled"})
_IDLE = frozenset({"none", "completed", "failed", "cancelled"})
_TCP = re.compile(r"^tcp:(\[[0-9A-Fa-f:.]+\]|[^:\[\]]+):(\d{1,5})$")

ProgressSink = Callable[["MigrationProgress"], None]


@record
class MigrationProgress:
    """One look at a running migration: QEMU's status, RAM bytes transferred, remaining
    and total, RAM passes so far, the dirty rate (pages/s), throughput (Mbit/s), the
    expected downtime (ms), and the failover primaries QEMU has unplugged."""

    status: str
    transferred: int
    remaining: int
    total: int
    passes: int
    dirty_rate: int
    mbps: float
    expected_downtime_ms: int | None
    unplugged: tuple[str, ...] = ()

    @classmethod
    def of(
        cls, info: MigrationInfo, passes: int | None = None, unplugged: Iterable[str] = ()
    ) -> MigrationProgress:
        """From a ``query-migrate`` answer; ``passes`` from MIGRATION_PASS when known."""
        return cls(
            status=info.status,
            transferred=info.transferred,
            remaining=info.remaining,
            total=info.total,
            passes=info.dirty_sync_count if passes is None else passes,
            dirty_rate=info.dirty_pages_rate,
            mbps=info.mbps,
            expected_downtime_ms=info.expected_downtime_ms,
            unplugged=tuple(unplugged),
        )


@record
class MigrationOutcome:
    """A completed migration: wall time seen by qctl (s), QEMU's total time and guest
    downtime (ms), bytes sent, RAM passes, and the failover primaries unplugged."""

    wall_time: float
    total_time_ms: int | None
    downtime_ms: int | None
    transferred: int
    passes: int
    unplugged: tuple[str, ...]


@record
class FailoverPair:
    """A failover pair by alias: the virtio standby and the transient primary."""

    standby: str
    primary: str


def check_uri(uri: str) -> str:
    """Refuse a URI qctl does not migrate over; ``tcp:HOST:PORT`` and ``unix:PATH`` pass.

    ``exec:`` is refused: it runs a shell command as QEMU's user, outside every check.
    """
    scheme, _, rest = uri.partition(":")
    if scheme == "exec":
        raise MigrationError(
            f"refusing migration URI {uri!r}: exec: runs a shell command as QEMU; "
            "use tcp:HOST:PORT or unix:PATH",
            stage="check",
        )
    if scheme == "tcp":
        match = _TCP.match(uri)
        if match is None or not 0 < int(match.group(2)) < 65536:
            raise MigrationError(
                f"bad migration URI {uri!r}: expected tcp:HOST:PORT with a port from 1 to 65535",
                stage="check",
            )
        return uri
    if scheme == "unix" and rest:
        return uri
    raise MigrationError(
        f"unsupported migration URI {uri!r}: expected tcp:HOST:PORT or unix:PATH", stage="check"
    )


def _transient_of(iface: InterfaceDef) -> str | None:
    teaming = iface.teaming
    if teaming is not None and teaming.type is TeamingType.TRANSIENT:
        return teaming.persistent
    return None


def failover_pairs(live: DomainDef) -> list[FailoverPair]:
    """The failover pairs of ``live`` whose both halves are present."""
    aliases = {i.alias for i in live.interfaces}
    pairs = []
    for iface in live.interfaces:
        standby = _transient_of(iface)
        if standby is not None and standby in aliases and iface.alias is not None:
            pairs.append(FailoverPair(standby=standby, primary=iface.alias))
    return pairs


def check_migratable(live: DomainDef, ledger: Iterable[LedgerEntry] = ()) -> list[FailoverPair]:
    """Refuse a domain whose devices cannot migrate (stage ``check``); its failover pairs.

    A VFIO device holds host state QEMU cannot send, so only the transient half of a
    failover pair may be one: QEMU unplugs it before the RAM is sent.
    """
    for hostdev in live.hostdevs:
        raise MigrationError(
            f"cannot migrate {live.name!r}: hostdev {hostdev.alias} ({hostdev.source}) is a "
            "host device QEMU cannot migrate; only the transient half of a failover pair "
            "(<teaming type='transient'>) can be unplugged for a migration",
            stage="check",
        )
    aliases = {i.alias for i in live.interfaces}
    for iface in live.interfaces:
        standby = _transient_of(iface)
        if iface.type is InterfaceType.HOSTDEV and standby is None:
            raise MigrationError(
                f"cannot migrate {live.name!r}: hostdev interface {iface.alias} is not the "
                "transient half of a failover pair (<teaming type='transient' "
                "persistent='…'/>), and QEMU cannot migrate a host device",
                stage="check",
            )
        if standby is not None and standby not in aliases:
            raise MigrationError(
                f"cannot migrate {live.name!r}: interface {iface.alias} is the transient "
                f"half of a failover pair whose standby {standby!r} is not in the domain; "
                "without it QEMU does not unplug the primary",
                stage="check",
            )
    for entry in ledger:
        if entry.state is not EntryState.ATTACHED:
            raise MigrationError(
                f"cannot migrate {live.name!r}: device {entry.alias} is {entry.state.value}; "
                "wait for it to settle",
                stage="check",
            )
    return failover_pairs(live)


async def check_outgoing(
    monitor: Monitor, live: DomainDef, ledger: Iterable[LedgerEntry] = ()
) -> list[str]:
    """Every refusal of :func:`check_migratable`, plus QEMU's: a migration already running,
    ``blocked-reasons``. Returns warnings: failover pairs the guest never negotiated (QEMU
    keeps such a primary hidden, so no fast path on either host)."""
    pairs = check_migratable(live, ledger)
    info = await monitor.query_migrate()
    if info.status not in _IDLE:
        raise MigrationError(
            f"cannot migrate {live.name!r}: a migration is already {info.status}", stage="check"
        )
    if info.blocked_reasons:
        raise MigrationError(
            f"cannot migrate {live.name!r}: QEMU blocks it: {'; '.join(info.blocked_reasons)}",
            stage="check",
        )
    warnings = []
    if pairs:
        present = await monitor.peripherals()
        for pair in pairs:
            if pair.primary not in present:
                warnings.append(
                    f"failover pair {pair.standby}/{pair.primary}: the guest has not "
                    "negotiated failover, so QEMU never plugged the primary; it cannot be "
                    "unplugged cleanly and the guest has no fast path on either host"
                )
    for warning in warnings:
        log.warning("%s: %s", live.name, warning)
    return warnings


async def _pump(events: AsyncIterator[QMPEvent], queue: asyncio.Queue[QMPEvent | None]) -> None:
    """Copy ``events`` into ``queue``; ``None`` marks their end (the connection closed)."""
    try:
        async for event in events:
            queue.put_nowait(event)
    finally:
        queue.put_nowait(None)


class _Follower:
    """Follows one migration from its events, reading ``query-migrate`` between them."""

    def __init__(
        self,
        monitor: Monitor,
        events: AsyncIterator[QMPEvent],
        sink: ProgressSink | None,
        interval: float,
        role: str,
    ) -> None:
        self.monitor = monitor
        self.events = events
        self.sink = sink
        self.interval = interval
        self.role = role
        self.passes: int | None = None
        self.unplugged: list[str] = []

    def _note(self, event: QMPEvent) -> None:
        """Record what ``event`` says (MIGRATION itself only wakes us to look)."""
        if event.name == "MIGRATION_PASS":
            self.passes = int(event.data.get("pass", 0))
        elif event.name == "UNPLUG_PRIMARY":
            alias = str(event.data.get("device-id", ""))
            log.info("QEMU unplugs failover primary %s", alias)
            self.unplugged.append(alias)
        elif event.name == "FAILOVER_NEGOTIATED":
            log.info("the guest negotiated failover on %s", event.data.get("device-id"))

    def _drain(self, queue: asyncio.Queue[QMPEvent | None]) -> bool:
        """Note every event already queued; whether their end is among them."""
        ended = False
        while not queue.empty():
            event = queue.get_nowait()
            if event is None:
                ended = True
            else:
                self._note(event)
        return ended

    async def _settled(self, info: MigrationInfo) -> MigrationInfo:
        """The final figures: QEMU says ``completed`` a moment before it fills in the
        total time and downtime, so look again (briefly) until they are there."""
        for _ in range(20):
            if info.total_time_ms or self.role != "transfer":
                break
            await asyncio.sleep(0.01)
            info = await self.monitor.query_migrate()
        return info

    async def run(self) -> MigrationInfo:
        """Wait until the migration completes (its last ``query-migrate`` answer).

        :raise MigrationError: it failed or was cancelled, or QEMU went away.
        """
        queue: asyncio.Queue[QMPEvent | None] = asyncio.Queue()
        pump = asyncio.create_task(_pump(self.events, queue), name="migration events")
        try:
            while True:
                ended = False
                try:
                    async with asyncio.timeout(self.interval):
                        event = await queue.get()
                    if event is None:
                        ended = True
                    else:
                        self._note(event)
                except TimeoutError:
                    pass
                try:
                    info = await self.monitor.query_migrate()
                except QMPError as exc:
                    raise MigrationError(
                        f"lost the {self.role} QEMU during the migration: {exc}", stage=self.role
                    ) from exc
                # QEMU sent the events before its answer: a fast migration's burst
                # (UNPLUG_PRIMARY, the passes, ``completed``) is all noted before we stop.
                ended = self._drain(queue) or ended
                if self.sink is not None:
                    self.sink(MigrationProgress.of(info, self.passes, self.unplugged))
                if info.status == _DONE:
                    return await self._settled(info)
                if info.status in _FAILED:
                    raise MigrationError(
                        f"migration {info.status} on the {self.role} side: "
                        f"{info.error or 'QEMU gave no reason'}",
                        stage=self.role,
                    )
                if ended:
                    raise MigrationError(
                        f"the {self.role} QEMU's monitor closed during the migration",
                        stage=self.role,
                    )
        finally:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump


async def cancel_migration(monitor: Monitor, *, timeout: float = CANCEL_TIMEOUT) -> str:  # noqa: ASYNC109
    """Cancel the outgoing migration and wait until QEMU settles; its final status.

    ``completed`` means the cancel came too late: the guest now runs on the destination.
    """
    with contextlib.suppress(QMPCommandError):
        await monitor.migrate_cancel()
    async with asyncio.timeout(timeout):
        while True:
            info = await monitor.query_migrate()
            if info.status in _IDLE:
                return info.status
            await asyncio.sleep(0.05)


async def _cancel_shielded(monitor: Monitor) -> str | None:
    """:func:`cancel_migration`, run to its end whatever cancels us meanwhile (a second
    cancellation is held until it is done, then raised); ``None`` if it failed."""
    task = asyncio.ensure_future(cancel_migration(monitor))
    cancelled = False
    status: str | None = None
    while True:
        try:
            status = await asyncio.shield(task)
            break
        except asyncio.CancelledError:
            if task.done():
                break
            cancelled = True
        except (QMPError, TimeoutError) as exc:
            log.warning("cancelling the migration failed: %s", exc)
            break
    if cancelled:
        raise asyncio.CancelledError
    return status


async def migrate_out(
    monitor: Monitor,
    events: AsyncIterator[QMPEvent],
    uri: str,
    *,
    timeout: float | None = None,  # noqa: ASYNC109 - the whole migration's bound
    bandwidth: int | None = None,
    downtime_ms: int | None = None,
    progress: ProgressSink | None = None,
    release_source: Callable[[], Awaitable[None]] | None = None,
    capabilities: Mapping[str, bool] = CAPABILITIES,
    poll_interval: float = POLL_INTERVAL,
) -> MigrationOutcome:
    """Migrate the guest to ``uri`` and follow it to completion (see the module).

    ``events`` must be subscribed to :data:`MIGRATION_EVENTS` before the call. ``bandwidth``
    caps the transfer (bytes/s), ``downtime_ms`` the guest's pause at switch-over.
    ``progress`` receives a :class:`MigrationProgress` at every look. ``release_source`` is
    awaited (shielded) once QEMU reports ``completed``: it must quit the ``postmigrate``
    source at once (no ACPI) and release its host side. Call :func:`check_outgoing` first.

    :raise MigrationError: refused, failed, cancelled by another process or timed out; the
        source keeps running and QEMU has re-plugged its primaries.
    """
    check_uri(uri)
    started = time.monotonic()
    follower = _Follower(monitor, events, progress, poll_interval, "transfer")
    try:
        await monitor.migrate_set_capabilities(capabilities)
        await monitor.migrate_set_parameters(max_bandwidth=bandwidth, downtime_limit_ms=downtime_ms)
    except QMPCommandError as exc:
        raise MigrationError(f"cannot set up the migration: {exc}", stage="setup") from exc
    info: MigrationInfo | None = None
    try:
        async with asyncio.timeout(timeout):
            try:
                await monitor.migrate(uri)
            except QMPCommandError as exc:
                raise MigrationError(
                    f"QEMU refused to migrate to {uri}: {exc.desc}", stage="setup"
                ) from exc
            info = await follower.run()
    except TimeoutError as exc:
        status = await _cancel_shielded(monitor)
        if status != _DONE:
            raise MigrationError(
                f"migration to {uri} did not complete within {timeout:g}s; cancelled "
                "(the source keeps running)",
                stage="transfer",
            ) from exc
        info = await monitor.query_migrate()
    except asyncio.CancelledError:
        status = await _cancel_shielded(monitor)
        if status == _DONE:
            log.error("migration to %s completed before it could be cancelled", uri)
        raise
    assert info is not None
    if release_source is not None:
        await asyncio.shield(release_source())
    return MigrationOutcome(
        wall_time=time.monotonic() - started,
        total_time_ms=info.total_time_ms,
        downtime_ms=info.downtime_ms,
        transferred=info.transferred,
        passes=follower.passes if follower.passes is not None else info.dirty_sync_count,
        unplugged=tuple(follower.unplugged),
    )


async def migrate_in(
    monitor: Monitor,
    events: AsyncIterator[QMPEvent],
    listen_uri: str,
    *,
    timeout: float | None = None,  # noqa: ASYNC109 - the whole migration's bound
    capabilities: Mapping[str, bool] = CAPABILITIES,
    ready: Callable[[], None] | None = None,
    poll_interval: float = POLL_INTERVAL,
) -> None:
    """Receive a migration on ``listen_uri`` into a QEMU started with ``-incoming defer``,
    then resume the guest.

    ``events`` must be subscribed to :data:`MIGRATION_EVENTS` before the call; ``ready``
    is called once QEMU listens (the source may start then).

    :raise MigrationError: QEMU is not waiting for a migration, refused the URI, the
        migration failed, QEMU exited (it does when the stream breaks), or ``timeout``
        passed. The caller then removes the destination.
    """
    check_uri(listen_uri)
    state = await monitor.status()
    if state != "inmigrate":
        raise MigrationError(
            f"QEMU is {state}, not waiting for a migration (start it with -incoming defer)",
            stage="incoming",
        )
    try:
        await monitor.migrate_set_capabilities(capabilities)
        await monitor.migrate_incoming(listen_uri)
    except QMPCommandError as exc:
        raise MigrationError(
            f"cannot listen for the migration on {listen_uri}: {exc.desc}", stage="incoming"
        ) from exc
    if ready is not None:
        ready()
    follower = _Follower(monitor, events, None, poll_interval, "incoming")
    try:
        async with asyncio.timeout(timeout):
            await follower.run()
    except TimeoutError as exc:
        raise MigrationError(
            f"no migration completed on {listen_uri} within {timeout:g}s", stage="incoming"
        ) from exc
    await monitor.resume()


async def watch_progress(
    monitor: Monitor, *, interval: float = POLL_INTERVAL
) -> AsyncIterator[MigrationProgress]:
    """The migration's progress every ``interval`` seconds, from ``query-migrate``, until it
    ends (the last item has its final status). Any process with a monitor can watch."""
    while True:
        info = await monitor.query_migrate()
        yield MigrationProgress.of(info)
        if info.status in _IDLE:
            return
        await asyncio.sleep(interval)
