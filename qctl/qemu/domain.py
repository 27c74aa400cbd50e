"""The :class:`Domain` handle: the public face of one running QEMU.

The handle holds a :class:`~qctl.qemu.runtime.DomainRuntime` (the books, the job lock, the
monitor, the run state) and delegates every job to the module that owns it: starting to
:mod:`~qctl.qemu.startup`, taking over to :mod:`~qctl.qemu.reconnect`, hot-plug to
:mod:`~qctl.qemu.hotplug`, power to :mod:`~qctl.qemu.power`.

Building a handle starts no task; :meth:`start` and :meth:`connect` start the runtime's
event pump and exit watcher once the handle exists, and :meth:`aclose` stops them. Both
take an injectable :class:`~qctl.qemu.process.Launcher`, so the driver runs against a fake
QEMU in tests. Closing a handle only disconnects; leaving ``async with Domain.start(...)``
stops the domain.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import overload

from qctl.caps import CapsCache, QEMUCaps
from qctl.conf import (
    DomainDef,
    HostdevDef,
    InterfaceDef,
    LiveHostdev,
    LiveInterface,
    format_xml,
)
from qctl.host import LinkControl
from qctl.qemu import hotplug, migrationjob, power
from qctl.qemu.console import Console
from qctl.qemu.dryrun import command_line, dry_run_argv
from qctl.qemu.events import DomainEvent, EventStream
from qctl.qemu.hostpaths import HostPaths
from qctl.qemu.hotplug import DEFAULT_DETACH_TIMEOUT, DetachResult
from qctl.qemu.jobs import DomainInfo, abort_job, list_domains, read_job
from qctl.qemu.ledger import Ledger
from qctl.qemu.migratable import migratable_xml
from qctl.qemu.migration import (
    MigrationOutcome,
    MigrationProgress,
    ProgressSink,
    watch_progress,
)
from qctl.qemu.monitor import Monitor
from qctl.qemu.network import NetworkStore
from qctl.qemu.opening import Opening
from qctl.qemu.process import Launcher, QEMUProcess
from qctl.qemu.reconnect import open_runtime
from qctl.qemu.runstate import RunState
from qctl.qemu.runtime import DomainRuntime
from qctl.qemu.startup import Launched, launch
from qctl.qemu.state import DomainDir, StateRoot
from qctl.qemu.txn import JobRecord, to_the_end

__all__ = ["DEFAULT_BINARY", "DetachResult", "Domain", "DomainInfo", "HostPaths", "abort_job"]

DEFAULT_BINARY = "qemu-system-x86_64"

Device = InterfaceDef | HostdevDef
EventKind = type[DomainEvent] | str


def _binary_for(defn: DomainDef) -> str:
    """The emulator: ``<emulator>``, else ``$QCTL_QEMU``, else qemu-system-x86_64 on PATH."""
    return defn.devices.emulator or os.environ.get("QCTL_QEMU") or DEFAULT_BINARY


def _runtime(
    started: Launched,
    root: StateRoot,
    netlink: LinkControl | None,
    paths: HostPaths,
    caps: QEMUCaps,
) -> DomainRuntime:
    """The runtime of a domain :func:`~qctl.qemu.startup.launch` just started."""
    return DomainRuntime(
        status=started.status,
        directory=started.directory,
        process=started.process,
        client=started.client,
        root=root,
        netlink=netlink,
        host_paths=paths,
        caps=caps,
        stamp=started.stamp,
    )


def _root(state_root: StateRoot | Path | str | None) -> StateRoot:
    return state_root if isinstance(state_root, StateRoot) else StateRoot(state_root)


class Domain:
    """A running QEMU, its live definition and the ledger of what it holds."""

    def __init__(self, runtime: DomainRuntime) -> None:
        self.runtime = runtime
        self._console: Console | None = None

    def __repr__(self) -> str:
        return f"<Domain {self.name} pid={self.process.pid}>"

    def _begin(self) -> Domain:
        rt = self.runtime
        rt.hub.set_fallback(lambda event: hotplug.on_unclaimed(rt, event))
        rt.begin()
        return self

    # -- what it is ----------------------------------------------------------------------
    @property
    def name(self) -> str:
        """The domain's name."""
        return self.runtime.name

    @property
    def config(self) -> DomainDef:
        """The definition as given to :meth:`start`."""
        return self.runtime.config

    @property
    def live(self) -> DomainDef:
        """The live definition: aliases, addresses, taps, the vhost choice filled in."""
        return self.runtime.live

    @property
    def ledger(self) -> Ledger:
        """Every device and the host resources it holds."""
        return self.runtime.ledger

    @property
    def process(self) -> QEMUProcess:
        """The QEMU process."""
        return self.runtime.process

    @property
    def running(self) -> bool:
        """True until QEMU has exited."""
        return self.runtime.running

    @property
    def state(self) -> RunState:
        """QEMU's run state, as last seen (query-status at connect, then its events)."""
        return self.runtime.state

    @property
    def job(self) -> JobRecord | None:
        """The job running on this domain, in this process or another (from the books)."""
        return self.runtime.job_record or read_job(self.runtime.directory)

    @property
    def directory(self) -> DomainDir:
        """The domain's state directory (status file, monitors, QEMU's log)."""
        return self.runtime.directory

    @property
    def networks(self) -> NetworkStore:
        """The network pools of this domain's state root."""
        return self.runtime.networks

    @property
    def state_root(self) -> StateRoot:
        """The state root this domain lives in."""
        return self.runtime.root

    def console(self) -> Console:
        """The guest's console on its first serial port: read everything it wrote (any
        number of readers, nothing before attaching lost), ``wait_for`` a pattern, ``send``
        input (to a pty). One per handle; closed with the handle."""
        rt = self.runtime
        if self._console is None:
            self._console = Console.of(rt.directory, rt.live, rt.process)
        return self._console

    def xml(self, *, live: bool = True) -> str:
        """The live domain XML, or with ``live=False`` the definition as given."""
        return format_xml(self.live if live else self.config)

    async def capabilities(self) -> QEMUCaps:
        """This QEMU's capabilities (from the start, or the cache)."""
        return await self.runtime.capabilities()

    # -- starting and connecting ----------------------------------------------------------
    @classmethod
    def start(
        cls,
        defn: DomainDef,
        *,
        caps: QEMUCaps | None = None,
        state_root: StateRoot | Path | str | None = None,
        netlink: LinkControl | None = None,
        host_paths: HostPaths | None = None,
        launcher: Launcher | None = None,
        die_with_owner: bool = False,
    ) -> Opening[Domain]:
        """Start ``defn``: ``dom = await Domain.start(defn)`` (QEMU outlives the handle) or
        ``async with Domain.start(defn) as dom`` (the domain is stopped on leaving).
        ``die_with_owner``: QEMU is killed when this process dies, however it dies (a
        crashed test run leaves no VM; the next command releases what it held).

        ``caps`` defaults to the (cached) probe of the domain's emulator (``<emulator>``,
        else ``$QCTL_QEMU``, else qemu-system-x86_64). Nothing is created on the host when
        the command line cannot be built, and a failure at any later step leaves no tap,
        fd, process or state behind.
        """
        root = _root(state_root)
        paths = host_paths if host_paths is not None else HostPaths()

        async def opener() -> Domain:
            binary = _binary_for(defn)
            known = caps or await CapsCache().get(binary)
            started = await launch(
                defn,
                known,
                binary,
                root,
                netlink,
                paths,
                launcher or Launcher(),
                die_with_owner=die_with_owner,
            )
            runtime = _runtime(started, root, netlink, paths, known)
            return cls(runtime)._begin()

        return Opening(opener, stop_on_exit=True)

    @classmethod
    def incoming(
        cls,
        defn: DomainDef,
        listen_uri: str,
        *,
        caps: QEMUCaps | None = None,
        state_root: StateRoot | Path | str | None = None,
        netlink: LinkControl | None = None,
        host_paths: HostPaths | None = None,
        launcher: Launcher | None = None,
        timeout: float | None = None,
        ready: Callable[[], None] | None = None,
    ) -> Opening[Domain]:
        """Be the destination of a live migration: start ``defn`` (the source's
        :meth:`migratable_xml`) with ``-incoming defer``, with this host's own taps,
        bridges and pool devices, listen on ``listen_uri`` and wait for the guest (``ready``
        is called once QEMU listens). The result is a normal running domain; on failure,
        cancellation or ``timeout`` everything made here is removed."""
        root = _root(state_root)
        paths = host_paths if host_paths is not None else HostPaths()

        async def opener() -> Domain:
            binary = _binary_for(defn)
            known = caps or await CapsCache().get(binary)
            started = await launch(
                defn, known, binary, root, netlink, paths, launcher or Launcher(), incoming=True
            )
            runtime = _runtime(started, root, netlink, paths, known)
            dom = cls(runtime)._begin()
            try:
                await migrationjob.receive(runtime, listen_uri, timeout=timeout, ready=ready)
            except BaseException:
                await to_the_end(dom.stop(force=True))
                await dom.aclose()
                raise
            return dom

        return Opening(opener, stop_on_exit=True)

    @staticmethod
    async def command_line(
        defn: DomainDef,
        *,
        caps: QEMUCaps | None = None,
        state_root: StateRoot | Path | str | None = None,
    ) -> list[str]:
        """The argv :meth:`start` would run, built without touching the host (fds symbolic).

        Like ``virsh domxml-to-native``: the vhost-net choice follows whether /dev/vhost-net
        opens here, and ``type='network'`` NICs use the pools defined in ``state_root``.
        """
        if caps is None:  # cached caps or a probe, never the document's <emulator> run
            return await command_line(defn, state_root=state_root)
        networks = NetworkStore(_root(state_root)).get
        return dry_run_argv(defn, caps, networks=networks, binary=_binary_for(defn))

    @classmethod
    def connect(
        cls,
        name: str,
        *,
        state_root: StateRoot | Path | str | None = None,
        netlink: LinkControl | None = None,
        host_paths: HostPaths | None = None,
        launcher: Launcher | None = None,
    ) -> Opening[Domain]:
        """Connect to the running domain ``name`` from its status file alone.

        Never waits for another process's job: when none runs, the books are reconciled
        with QEMU (and a job whose owner died is recovered). If QEMU is gone, what the
        ledger holds is released, the state removed, and :class:`StateError` raised.
        """
        root = _root(state_root)
        paths = host_paths if host_paths is not None else HostPaths()

        async def opener() -> Domain:
            runtime = await open_runtime(
                name, root, netlink=netlink, host_paths=paths, launcher=launcher or Launcher()
            )
            dom = cls(runtime)._begin()
            try:
                await hotplug.reconcile(runtime)
            except BaseException:
                await dom.aclose()
                raise
            return dom

        return Opening(opener, stop_on_exit=False)

    @staticmethod
    def list(state_root: StateRoot | Path | str | None = None) -> list[DomainInfo]:
        """Every domain with a state directory: its QEMU, run state and job, from the books
        alone (never waiting for a job). A damaged status file is listed with its error."""
        return list_domains(_root(state_root))

    # -- hot-plug ------------------------------------------------------------------------
    @overload
    async def attach_device(
        self, device: InterfaceDef, *, source: str | None = None
    ) -> LiveInterface: ...
    @overload
    async def attach_device(
        self, device: HostdevDef, *, source: str | None = None
    ) -> LiveHostdev: ...
    @overload
    async def attach_device(
        self, device: str, *, source: str | None = None
    ) -> LiveInterface | LiveHostdev: ...
    async def attach_device(
        self, device: str | Device, *, source: str | None = None
    ) -> LiveInterface | LiveHostdev:
        """Hot-plug an ``<interface>`` or ``<hostdev>`` (XML text or definition).

        Returns the device as the live XML shows it, its ``alias`` set (an interface
        stays an interface, also when it is a VF). Validated against the live domain
        (duplicate MAC/alias, address in use) and this QEMU's capabilities; any failure
        undoes exactly the steps done. ``source`` names the document in errors.
        """
        return await hotplug.attach(self.runtime, device, source=source)

    async def detach_device(
        self, device: str | Device, *, wait: float = DEFAULT_DETACH_TIMEOUT
    ) -> DetachResult:
        """Unplug a device named by alias, XML text or definition.

        Waits up to ``wait`` seconds for QEMU's DEVICE_DELETED. Then the device is gone and
        everything it held released (``DETACHED``), or it stays ``detaching`` (``PENDING``)
        and the event finishes the job whenever it comes.
        """
        return await hotplug.detach(self.runtime, device, wait=wait)

    # -- events --------------------------------------------------------------------------
    def events(self, *, maxsize: int = 256) -> EventStream:
        """A stream of this domain's typed events from now on (bounded, drops the oldest),
        ``DeviceAdded`` for attaches made by other processes included."""
        self.runtime.watch_books()
        return self.runtime.hub.stream(maxsize)

    async def wait_event(
        self,
        kind: EventKind,
        *,
        match: Callable[[DomainEvent], bool] | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - QEMUMachine.event_wait's shape
    ) -> DomainEvent:
        """The next event of ``kind`` (a typed event class, or a QEMU event name such as
        ``"UNPLUG_PRIMARY"``) that ``match`` accepts; TimeoutError after ``timeout`` s."""

        def wanted(event: DomainEvent) -> bool:
            right_kind = (
                event.qemu_name == kind if isinstance(kind, str) else isinstance(event, kind)
            )
            return right_kind and (match is None or match(event))

        with self.runtime.hub.expect(wanted) as expectation:
            async with asyncio.timeout(timeout):
                return await expectation

    # -- power and jobs ------------------------------------------------------------------
    async def stop(
        self, *, force: bool = False, grace: float = 30.0, say: power.Say | None = None
    ) -> None:
        """Stop QEMU and release everything it held. Idempotent.

        Without ``force`` a guest that can answer is asked to power down (ACPI) and given
        ``grace`` seconds; a paused, migrated-away or unbooted one is not. Then ``quit``,
        then kill. ``say`` receives a line per step.
        """
        await power.stop(self.runtime, force=force, grace=grace, say=say or (lambda _: None))

    async def suspend(self) -> None:
        """Pause the vCPUs."""
        await power.suspend(self.runtime)

    async def resume(self) -> None:
        """Run the vCPUs again."""
        await power.resume(self.runtime)

    # -- migration ----------------------------------------------------------------------
    async def migrate(
        self,
        uri: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - the whole migration's bound
        bandwidth: int | None = None,
        downtime: int | None = None,
        progress: ProgressSink | None = None,
        say: power.Say | None = None,
    ) -> MigrationOutcome:
        """Live-migrate the guest to ``uri`` (``tcp:HOST:PORT`` or ``unix:PATH``), failover
        pairs included, as this domain's job (abortable from any process).

        ``bandwidth`` caps the transfer (bytes/s), ``downtime`` the guest's pause at
        switch-over (ms); ``progress`` gets a :class:`MigrationProgress` at every look,
        ``say`` a line per warning. On success the source QEMU is quit and everything it
        held released; on failure or abort it keeps running as before.
        """
        return await migrationjob.migrate(
            self.runtime,
            uri,
            timeout=timeout,
            bandwidth=bandwidth,
            downtime_ms=downtime,
            progress=progress,
            say=say,
        )

    def watch_migration(self) -> AsyncIterator[MigrationProgress]:
        """The running migration's progress (from any handle, in any process) until it ends."""
        return watch_progress(self.runtime.monitor)

    def migratable_xml(self) -> str:
        """The definition a migration's destination must start with: the live XML with
        what is bound to this host (tap names qctl chose, a VF taken from a pool) mapped
        back to what was asked."""
        rt = self.runtime
        return migratable_xml(rt.live, rt.config, rt.ledger)

    async def abort_job(self) -> JobRecord:
        """Abort the job running on this domain, in this process or another; returns it
        once its owner has rolled it back. :class:`StateError` when no job runs."""
        return await abort_job(self.name, state_root=self.state_root)

    async def wait_exit(self) -> None:
        """Wait until QEMU has exited and its resources were released."""
        await self.runtime.wait_exit()

    async def aclose(self) -> None:
        """Disconnect from QEMU (it keeps running) and stop this handle's tasks. Idempotent."""
        if self._console is not None:
            await self._console.aclose()
        await self.runtime.aclose()

    async def __aenter__(self) -> Domain:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    @property
    def monitor(self) -> Monitor:
        """The driver's QMP vocabulary on this handle's monitor connection."""
        return self.runtime.monitor
