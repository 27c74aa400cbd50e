"""A running domain's runtime: what every job of the driver takes.

:class:`DomainRuntime` holds the books (the definition as given, the live definition, the
ledger, the status file that keeps them), the job lock and the record of the job under
way, QEMU's run state, the monitor, the capabilities, and the host handles (netlink,
sysfs, network pools). Jobs — hot-plug (:mod:`~qctl.qemu.hotplug`), power
(:mod:`~qctl.qemu.power`), migration — are functions that take a runtime; none of them
knows the public :class:`~qctl.qemu.domain.Domain` handle.

Background tasks, all owned here and cancelled and awaited by :meth:`aclose`: the event
pump (one per QMP connection: run-state changes, then the :class:`EventHub`), QEMU's
exit watcher (releases what the ledger holds when QEMU exits on its own), and tasks jobs
hand over with :meth:`spawn` (finishing a removal after a late event). None start before
:meth:`begin`, so a runtime can be built and inspected without an event loop running.

Jobs (:meth:`job`): one modifying job at a time per domain, recorded in the status file
(kind, device, owner, start, progress) so other processes can see it without waiting and
abort it; an abort request (a file naming the job) cancels the owner's task, which rolls
back as for any cancellation and raises :class:`~qctl.errors.JobAbortedError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

from qctl.caps import CapsCache, QEMUCaps
from qctl.conf import DomainDef, DomainType, format_xml
from qctl.errors import JobAbortedError, StateError
from qctl.host import LinkControl, Netlink, in_memory
from qctl.qemu.claims import devices_in_use
from qctl.qemu.command import Features
from qctl.qemu.events import DeviceAdded, DomainEvent, EventHub, from_qmp
from qctl.qemu.hostpaths import HostPaths
from qctl.qemu.journal import Update
from qctl.qemu.ledger import EntryState, Ledger, LedgerEntry
from qctl.qemu.monitor import Monitor
from qctl.qemu.network import NetworkStore
from qctl.qemu.plan import features_from_caps
from qctl.qemu.process import QEMUProcess
from qctl.qemu.release import HostSide, release_entry, release_ledger
from qctl.qemu.runstate import RunState, after_event
from qctl.qemu.state import DomainDir, StateRoot
from qctl.qemu.status import (
    Stamp,
    Status,
    StatusRenderer,
    StoredStatus,
    read_stored_status,
    stamp_of,
    status_stamp,
)
from qctl.qemu.txn import ABORT_POLL, LOCK_TIMEOUT, JobLock, JobRecord
from qctl.qemu.writer import StatusWriter
from qctl.qmp import QMPClient
from qctl.types import PCIAddress

__all__ = ["DomainRuntime"]

log = logging.getLogger(__name__)

_EVENT_QUEUE = 1024
#: how often a handle with listeners looks for attaches other processes made (seconds)
BOOKS_POLL = 0.25


class DomainRuntime:
    """The books, lock, job, run state, monitor and host handles of one running domain."""

    def __init__(
        self,
        *,
        status: Status | StoredStatus,
        directory: DomainDir,
        process: QEMUProcess,
        client: QMPClient,
        root: StateRoot,
        netlink: LinkControl | None = None,
        host_paths: HostPaths | None = None,
        caps: QEMUCaps | None = None,
        stamp: Stamp | None,
    ) -> None:
        # The definitions of a status file read back are parsed on first use (see
        # :class:`StoredStatus`); a start hands them over parsed.
        self._stored = status if isinstance(status, StoredStatus) else None
        self._config = None if isinstance(status, StoredStatus) else status.config
        self._live = None if isinstance(status, StoredStatus) else status.live
        self.ledger = status.ledger
        self.binary = status.binary
        self.state = status.state
        self.job_record = status.job
        #: whether the books written show ``job_record``: a job's record is written once it
        #: has run one :data:`ABORT_POLL` (a shorter job is over before another process
        #: could act on it, so its end has no record to take back) or announces itself
        self._job_shown = True
        self.directory = directory
        self.process = process
        self.client = client
        self.monitor = Monitor(client)
        self.root = root
        self.host_paths = host_paths if host_paths is not None else HostPaths()
        self.networks = NetworkStore.for_host(root, self.host_paths.sysfs)
        self.hub = EventHub(directory.name)
        self.lock = JobLock(directory.name, directory.lock_file_path())
        self.released = False
        self.closed = False
        self.exited = asyncio.Event()
        self._caps = caps
        self._netlink = netlink
        self._own_netlink: Netlink | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._watcher: asyncio.Task[None] | None = None
        self._book_watch: asyncio.Task[None] | None = None
        self._seen_attached: set[str] = set()
        self._releasing: asyncio.Task[None] | None = None
        # What the status file looked like when ``status`` was read or written (taken
        # before the read, or under the lock of the write: never newer than the books; None
        # when unknown, and then the first job reads the file again).
        self._stamp = stamp
        # The status file (or its journal) is written at every hot-plug step: see :meth:`save`.
        self._renderer = StatusRenderer()
        self._snapshot: tuple[DomainDef, str] | None = None
        # The run state the books were last rendered with (None: unknown, render again).
        self._rendered_state: RunState | None = None
        self._writer = StatusWriter(
            directory.status_file,
            self._render,
            self._written,
            failed=self._renderer.reset,
            inline=_in_memory(directory),
            group=directory.root.path,
        )

    def __repr__(self) -> str:
        return f"<DomainRuntime {self.name} pid={self.process.pid}>"

    # -- what it is ----------------------------------------------------------------------
    @property
    def name(self) -> str:
        """The domain's name."""
        return self.directory.name

    @property
    def config(self) -> DomainDef:
        """The definition as given to the start."""
        if self._config is None:
            assert self._stored is not None
            self._config = self._stored.config()
        return self._config

    @property
    def live(self) -> DomainDef:
        """The live definition (the books' own copy: jobs replace it as devices come and
        go)."""
        if self._live is None:
            assert self._stored is not None
            self._live = self._stored.live()
        return self._live

    @live.setter
    def live(self, domain: DomainDef) -> None:
        self._live = domain

    @property
    def running(self) -> bool:
        """True until QEMU has exited."""
        return not self.exited.is_set() and self.process.alive()

    @property
    def accel_is_kvm(self) -> bool:
        """True when the domain runs under KVM (vhost-net is used only then)."""
        return self.live.type is DomainType.KVM

    async def capabilities(self) -> QEMUCaps:
        """This QEMU's capabilities (from the start, or the cache)."""
        if self._caps is None:
            self._caps = await CapsCache().get(self.binary)
        return self._caps

    async def features(self) -> Features:
        """The command-line features of this QEMU."""
        return features_from_caps(await self.capabilities())

    async def netlink(self) -> LinkControl:
        """The netlink facade: the injected one, or one this runtime opens and closes."""
        if self._netlink is not None:
            return self._netlink
        if self._own_netlink is None:
            self._own_netlink = Netlink()
        return self._own_netlink

    async def host_side(self) -> HostSide:
        """Where released host resources go back to."""
        paths = self.host_paths
        return HostSide(await self.netlink(), paths.sysfs, self.networks, self.name, paths.vfio_dir)

    def devices_in_use(self) -> dict[PCIAddress, str]:
        """Host PCI devices held by any domain of this state root, as ``domain/alias``."""
        return devices_in_use(self.root, self.name, self.ledger)

    # -- the books -----------------------------------------------------------------------
    async def record(self, entry: LedgerEntry, *, durable: bool = True) -> None:
        """Put ``entry`` in the ledger; returns once the status file has it, or without
        ``durable`` at once (for a commit: the job's end writes it, and until then a crash
        leaves the entry as it was, which reconciling settles)."""
        self.ledger.put(entry)
        await self.save(durable=durable)

    async def forget(self, alias: str) -> None:
        """Drop ``alias`` from the ledger; returns once the status file (with a fresh
        snapshot of the live XML: a removal is never on a hurried path) has it."""
        self.ledger.remove(alias)
        await self.save(snapshot=True)

    def set_state(self, state: RunState) -> None:
        """Note QEMU's run state; written with the next save (call under a job)."""
        self.state = state

    async def save(self, *, snapshot: bool = False, durable: bool = True) -> None:
        """Write the books (in a thread, on tmpfs in the loop: see :mod:`~qctl.qemu.writer`);
        with ``durable``, return once they are on disk.

        The live XML in the file is a snapshot that may lag behind: rendering the whole
        domain costs more than a hot-plug step, and the ledger already says which devices
        exist (with the XML of hot-plugged ones), so a reader merges the two
        (:func:`~qctl.qemu.devices.merge_live`). An attach never renders it; a removal,
        which waits far longer for the guest anyway, renews it (``snapshot``).
        """
        if self.released:
            return
        if snapshot and self._snapshot is not None and self._snapshot[0] is not self.live:
            self._snapshot = None
        self._writer.changed()
        if durable:
            await self._writer.flush()

    async def _publish(self) -> None:
        """Write the books; return once other processes read them (not yet synced), also
        when cancelled meanwhile (the cancellation is raised after)."""
        self._writer.changed()
        await self._writer.flush(durable=False, shielded=True)

    def _unpublished(self) -> bool:
        """Whether the books hold a change the status file does not show yet."""
        return self._writer.unwritten or self.state is not self._rendered_state

    def _render(self) -> Update:
        self._rendered_state = self.state
        if self._snapshot is None:
            self._snapshot = (self.live, format_xml(self.live))
        status = Status(
            self.process.identity,
            self.binary,
            self.config,
            self.live,
            self.ledger,
            state=self.state,
            job=self.job_record if self._job_shown else None,
        )
        return self._renderer.update(status, live_xml=self._snapshot[1])

    def _written(self, status: os.stat_result, journal: os.stat_result | None) -> None:
        self._stamp = stamp_of(status, journal)

    def refresh(self) -> None:
        """Take up the books another qctl process wrote since this runtime last did.

        Several processes may hold a handle on one domain (there are several monitors);
        each job starts from the status file as it is, never from a stale copy.
        """
        stamp = status_stamp(self.directory)
        if stamp == self._stamp:
            return
        if stamp is None:  # stopped meanwhile: a write now fails (not one into the
            self._renderer.reset()  # journal kept open on tmpfs, which is gone)
            return
        self._stored = read_stored_status(self.directory)
        self._live, self.ledger = None, self._stored.ledger
        self._stamp = stamp
        self._snapshot = None  # the snapshot rendered here may show an older domain
        self._rendered_state = None  # the job's end renders the books again
        self._renderer.reset()  # the file on disk is not the one rendered here last

    # -- jobs --------------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def job(self, kind: str, alias: str | None = None) -> AsyncIterator[JobRecord]:
        """Run the block as this domain's one modifying job (see the module).

        The record reaches the status file once the job has run one :data:`ABORT_POLL`,
        or when it announces itself (:meth:`announce_job`); from then on an abort request
        from another process cancels the task running the block, and the block's
        cancellation becomes :class:`JobAbortedError`.
        """
        task = asyncio.current_task()
        assert task is not None, "a job runs in a task"
        async with self.lock.held():
            if not self.released:
                self.refresh()
            record = JobRecord.begin(kind, alias)
            self.job_record, self._job_shown = record, False
            watch = _AbortWatch(self.directory.abort_file, record.id, task, self._show_job)
            try:
                yield record
            except asyncio.CancelledError:
                if watch.fired and task.uncancel() == 0:
                    raise JobAbortedError(
                        f"{kind}{' of ' + alias if alias else ''} on domain {self.name!r} "
                        "was aborted; what it had done was rolled back"
                    ) from None
                raise
            finally:
                watch.stop()
                shown = self._job_shown
                self.job_record, self._job_shown = None, True
                # Every write of this job, its commit included, is written before the job
                # returns and the lock is let go: what a caller sees returned is what
                # another process reads next. It need not be on disk yet: a crash loses at
                # most the commit, which reconciling settles. The wait is shielded from
                # cancellation (on tmpfs there is none: the write is made in the flush).
                # A job that changed nothing the books show (its record never shown, every
                # change written, the run state as rendered) writes nothing.
                if (
                    not self.released
                    and (shown or self._unpublished())
                    and self.directory.status_file.exists()
                ):
                    await self._publish()

    def name_job(self, alias: str) -> None:
        """Say which device the running job works on (once it is known)."""
        if self.job_record is not None:
            self.job_record = dataclasses.replace(self.job_record, alias=alias)

    def note_progress(self, progress: str) -> None:
        """Say how far the running job has come (shown by ``qctl job``; written soon)."""
        if self.job_record is not None:
            self.job_record = dataclasses.replace(self.job_record, progress=progress)
            if not self.released:
                self._writer.changed()

    def _show_job(self) -> None:
        """The running job has run a while: its record goes to the books (written soon)."""
        if not self._job_shown:
            self._job_shown = True
            if not self.released:
                self._writer.changed()

    async def announce_job(self) -> None:
        """Write the job record now (for a job that may run long before its first write)."""
        self._job_shown = True
        await self.save()

    # -- tasks -------------------------------------------------------------------------------
    def begin(self) -> None:
        """Start the event pump and the exit watcher (once)."""
        if self._watcher is not None:
            return
        subscription = self.client.events(maxsize=_EVENT_QUEUE)
        self.spawn(self._pump(subscription), f"{self}: events")
        self._watcher = asyncio.create_task(self._watch_exit(), name=f"{self}: exit")

    def spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        """Run ``work`` in a task this runtime owns (cancelled by :meth:`aclose`)."""
        if self.closed:
            work.close()
            return
        task = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _pump(self, subscription: Any) -> None:
        with subscription:
            async for raw in subscription:
                self.state = after_event(self.state, raw.name, raw.data)
                event = from_qmp(raw)
                if event is not None:
                    self.hub.publish(event)

    def publish(self, event: DomainEvent) -> None:
        """Hand one of qctl's own events (``DeviceAdded``) to the hub."""
        if isinstance(event, DeviceAdded):
            self._seen_attached.add(event.alias)
        self.hub.publish(event)

    def watch_books(self) -> None:
        """Publish ``DeviceAdded`` for attaches other processes make too (once started):
        QEMU has no event for them, so the status file is watched while anyone listens."""
        if self._book_watch is None and not self.closed:
            self._seen_attached = _attached(self.ledger)
            self._book_watch = asyncio.create_task(self._watch_books(), name=f"{self}: books")
            self._tasks.add(self._book_watch)

    async def _watch_books(self) -> None:
        stamp = status_stamp(self.directory)
        while not self.released:
            await asyncio.sleep(BOOKS_POLL)
            now = status_stamp(self.directory)
            if now is None or now == stamp:
                continue
            stamp = now
            with contextlib.suppress(StateError):
                # The version this runtime holds may carry another process's attach too
                # (a job's refresh took it up): compared like any other.
                attached = _attached(self._ledger_at(now))
                for alias in sorted(attached - self._seen_attached):
                    self.hub.publish(DeviceAdded(None, alias))
                self._seen_attached = attached | (self._seen_attached & _attached(self.ledger))

    async def _watch_exit(self) -> None:
        """Notice QEMU exiting on its own and release what it held, under the domain's
        lock (best effort: a stuck holder must not keep the resources)."""
        code = await self.process.wait()
        log.info("domain %s: QEMU exited (status %s)", self.name, code)
        with contextlib.suppress(StateError):
            async with self.lock.held(LOCK_TIMEOUT):
                await self.release()
                return
        await self.release()

    async def wait_exit(self) -> None:
        """Wait until QEMU has exited and its resources were released (or this runtime was
        closed, which stops watching)."""
        await self.exited.wait()
        if self._releasing is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(self._releasing)

    async def release(self) -> None:
        """Give back what the books hold now that QEMU is gone, then remove the state (once;
        shielded from cancellation, and awaited by :meth:`aclose` when in flight)."""
        if self._releasing is None:
            self._releasing = asyncio.ensure_future(self._release())
        await asyncio.shield(self._releasing)

    def _ledger_at(self, stamp: Stamp) -> Ledger:
        """The ledger of the status file's version ``stamp``: this runtime's own when it is
        the version it holds, else read (the ledger only, no XML parsed)."""
        return self.ledger if stamp == self._stamp else read_stored_status(self.directory).ledger

    async def _release(self) -> None:
        """The books are taken from the status file as it is now (another process may have
        changed them, or already released them: then there is nothing to do). Every entry
        is released even when one fails; the state stays where anything could not be given
        back, so a later connect tries again."""
        self.released = True
        self.state = RunState.SHUTOFF
        self.exited.set()
        self.hub.end()
        await self._writer.aclose()
        await self.client.aclose()
        stamp = status_stamp(self.directory)
        if stamp is None:
            return  # someone else released it
        ledger = self.ledger if stamp == self._stamp else self._stored_ledger()
        if ledger is None:
            return
        failures = await release_ledger(ledger, await self.host_side())
        for failure in failures:
            log.warning("domain %s: %s", self.name, failure)
        if not failures:
            self.directory.remove()

    def _stored_ledger(self) -> Ledger | None:
        """The ledger of the status file as another process left it, if it still describes
        this runtime's QEMU: None when it was released and removed meanwhile (the name may
        have been started anew: those books are not this QEMU's), or when it cannot be read
        (kept, with a warning, for the next connect)."""
        try:
            stored = read_stored_status(self.directory)
        except StateError as exc:
            if self.directory.status_file.exists():
                log.warning("domain %s: QEMU exited, and its books cannot be read (%s): "
                            "nothing was released; the next connect tries again", self.name, exc)
            return None
        return stored.ledger if stored.identity == self.process.identity else None

    async def release_host_resources(self, entry: LedgerEntry) -> None:
        """Free what one ledger entry holds on the host (each step tolerates "already gone")."""
        await release_entry(entry, await self.host_side())

    async def aclose(self) -> None:
        """Disconnect from QEMU (it keeps running) and stop the tasks; a release already
        under way is finished first. Idempotent."""
        if self.closed:
            return
        self.closed = True
        tasks = [*self._tasks, *([self._watcher] if self._watcher else [])]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._releasing is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(self._releasing)
        self.hub.end()
        await self._writer.aclose()
        await self.client.aclose()
        self.lock.close()
        if self._own_netlink is not None:
            await self._own_netlink.aclose()


#: whether a state root's domain directories are on tmpfs or ramfs, by their parent: asked
#: once per root and process (a ``statfs`` per handle was a tenth of a connect's own work)
_IN_MEMORY: dict[Path, bool] = {}


def _in_memory(directory: DomainDir) -> bool:
    """Whether the status file is on tmpfs or ramfs; False when that cannot be told (the
    directory gone meanwhile): the thread path, whose write then reports what is wrong."""
    where = directory.path.parent
    known = _IN_MEMORY.get(where)
    if known is None:
        try:
            known = in_memory(directory.path)
        except OSError:
            return False
        _IN_MEMORY[where] = known
    return known


def _attached(ledger: Ledger) -> set[str]:
    return {entry.alias for entry in ledger if entry.state is EntryState.ATTACHED}


class _AbortWatch:
    """Polls for an abort request naming job ``job_id`` and cancels ``task`` when one comes;
    calls ``ticked()`` at each poll (the job has run that long).

    A timer, not a task: a job that ends within one period costs one ``call_later``.
    """

    def __init__(
        self, path: Path, job_id: str, task: asyncio.Task[Any], ticked: Callable[[], None]
    ) -> None:
        self._path = path
        self._job_id = job_id
        self._task = task
        self._ticked = ticked
        self.fired = False
        self._handle: asyncio.TimerHandle | None = asyncio.get_running_loop().call_later(
            ABORT_POLL, self._check
        )

    def _check(self) -> None:
        self._ticked()
        try:
            wanted = self._path.read_text().strip()
        except (FileNotFoundError, UnicodeDecodeError):
            wanted = ""
        if wanted == self._job_id:
            self.fired = True
            self._handle = None
            self._task.cancel(f"job {self._job_id} aborted")
            return
        self._handle = asyncio.get_running_loop().call_later(ABORT_POLL, self._check)

    def stop(self) -> None:
        """Stop watching; drop an abort request that named this job."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self.fired:
            with contextlib.suppress(FileNotFoundError):
                self._path.unlink()
