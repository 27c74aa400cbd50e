"""The :class:`Domain` handle: one running QEMU, its live definition and its ledger.

A domain's truth lives in its state directory (see :mod:`qctl.qemu.state`): the live XML and
the ledger of host resources, rewritten atomically at every step. Any qctl process can
:meth:`Domain.connect` by name from that file alone, and on connect the ledger is reconciled
with what QEMU really has (:meth:`Domain.reconcile`).

Tasks the handle owns, all cancelled and awaited by :meth:`aclose`:

* the exit watcher: QEMU exiting on its own (poweroff, crash, ``kill -9``) is noticed
  through the child's exit or a pidfd, and what the ledger holds is released;
* the event reader: QEMU's events become typed :mod:`~qctl.qemu.events` for
  :meth:`events` streams, wake detaches waiting for DEVICE_DELETED, and finish detaches
  whose waiter gave up ("pending");
* finishers started for such late events.

One job at a time per domain: an ``asyncio.Lock`` inside this process plus the state
directory's file lock across processes. Waiting for a device's removal happens outside
the lock. Closing a handle only disconnects; it never stops QEMU.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qctl.caps import CapsCache, QEMUCaps
from qctl.conf import (
    DomainDef,
    DomainType,
    ForwardMode,
    HostdevDef,
    InterfaceDef,
    InterfaceSourceDef,
    InterfaceType,
    NetworkDef,
    format_xml,
    parse_device,
    validate_device,
)
from qctl.errors import HotplugError, QMPCommandError, QMPError, StateError
from qctl.host import LinkControl, Netlink
from qctl.qemu.command import Features
from qctl.qemu.devices import with_device
from qctl.qemu.dryrun import dry_run_argv
from qctl.qemu.events import (
    DeviceAdded,
    DeviceRemoved,
    DomainEvent,
    EventStream,
    UnplugRejected,
    from_qmp,
)
from qctl.qemu.hotplug import (
    DEFAULT_DETACH_TIMEOUT,
    DetachResult,
    attach_interface,
    attach_vfio,
    device_removed,
)
from qctl.qemu.ledger import EntryState, LedgerEntry
from qctl.qemu.monitor import Monitor, is_not_found
from qctl.qemu.network import NetworkStore
from qctl.qemu.placement import alias_for
from qctl.qemu.plan import features_from_caps
from qctl.qemu.process import QEMUProcess
from qctl.qemu.release import HostSide, release_all, release_entry, release_ledger
from qctl.qemu.startup import (
    LOCK_TIMEOUT,
    HostPaths,
    connect_free_monitor,
    launch,
    take_lock,
)
from qctl.qemu.state import DomainDir, HeldOpenLock, StateRoot
from qctl.qemu.status import Status, devices_held, read_status, write_status
from qctl.qmp import QMPClient
from qctl.types import PCIAddress

__all__ = ["DEFAULT_BINARY", "DetachResult", "Domain", "DomainInfo", "HostPaths"]

log = logging.getLogger(__name__)

DEFAULT_BINARY = "qemu-system-x86_64"
_EVENT_QUEUE = 1024
DEFAULT_HOST_PATHS = HostPaths()
#: how long a QEMU whose monitor refuses connections may take to finish exiting
_EXIT_GRACE = 2.0


@dataclass(frozen=True, slots=True)
class DomainInfo:
    """A line of ``qctl list``: a domain with a state directory, and whether QEMU runs."""

    name: str
    pid: int | None
    running: bool


def _binary_for(defn: DomainDef) -> str:
    """The emulator: ``<emulator>``, else ``$QCTL_QEMU``, else qemu-system-x86_64 on PATH."""
    return defn.devices.emulator or os.environ.get("QCTL_QEMU") or DEFAULT_BINARY


def _root(state_root: StateRoot | Path | str | None) -> StateRoot:
    return state_root if isinstance(state_root, StateRoot) else StateRoot(state_root)


class _Opening:
    """What :meth:`Domain.start` and :meth:`Domain.connect` return: await it or ``async with`` it.

    ``async with`` closes the handle (disconnects) on leaving the block; it does not stop QEMU.
    """

    def __init__(self, opener: Callable[[], Awaitable[Domain]]) -> None:
        self._opener = opener
        self._domain: Domain | None = None

    def __await__(self) -> Generator[Any, None, Domain]:
        return self._opener().__await__()

    async def __aenter__(self) -> Domain:
        self._domain = await self._opener()
        return self._domain

    async def __aexit__(self, *exc_info: object) -> None:
        if self._domain is not None:
            await self._domain.aclose()


class Domain:
    """A running QEMU, its live definition and the ledger of what it holds."""

    def __init__(
        self,
        *,
        status: Status,
        directory: DomainDir,
        process: QEMUProcess,
        client: QMPClient,
        root: StateRoot,
        netlink: LinkControl | None = None,
        host_paths: HostPaths = DEFAULT_HOST_PATHS,
        caps: QEMUCaps | None = None,
        stamp: tuple[int, int, int] | None = None,
    ) -> None:
        self.config = status.config
        self.live = status.live
        self.ledger = status.ledger
        self.binary = status.binary
        self.directory = directory
        self.process = process
        self.monitor = Monitor(client)
        self.networks = NetworkStore.for_host(root, host_paths.sysfs)
        self.host_paths = host_paths
        self._root = root
        self._caps = caps
        self._netlink = netlink
        self._own_netlink: Netlink | None = None
        self._lock = asyncio.Lock()
        self._file_lock = HeldOpenLock(directory.lock_file_path())
        self._released = False
        self._closed = False
        self._exited = asyncio.Event()
        self._streams: list[EventStream] = []
        self._unplug_waiters: dict[str, asyncio.Future[DomainEvent]] = {}
        self._finishers: set[asyncio.Task[None]] = set()
        # What the status file looked like when ``status`` was read (under the lock).
        self._stamp = stamp if stamp is not None else self._status_stamp()
        # The status file is rewritten at every hot-plug step: render each XML only once.
        self._config_xml = format_xml(self.config)
        self._rendered: tuple[DomainDef, str] | None = None
        subscription = client.events(maxsize=_EVENT_QUEUE)
        self._reader = asyncio.create_task(self._read_events(subscription), name=f"{self}: events")
        self._watcher = asyncio.create_task(self._watch_exit(), name=f"{self}: exit")

    def __repr__(self) -> str:
        return f"<Domain {self.live.name} pid={self.process.pid}>"

    @property
    def name(self) -> str:
        """The domain's name."""
        return self.live.name

    @property
    def running(self) -> bool:
        """True until QEMU has exited."""
        return not self._exited.is_set() and self.process.alive()

    @property
    def state_root(self) -> StateRoot:
        """The state root this domain lives in."""
        return self._root

    @property
    def accel_is_kvm(self) -> bool:
        """True when the domain runs under KVM (vhost-net is used only then)."""
        return self.live.type is DomainType.KVM

    @property
    def features(self) -> Features:
        """The command-line features of this QEMU (after :meth:`capabilities`)."""
        assert self._caps is not None, "capabilities() first"
        return features_from_caps(self._caps)

    def xml(self, *, live: bool = True) -> str:
        """The live domain XML (aliases, addresses, taps, the vhost choice filled in), or
        with ``live=False`` the definition as it was given to :meth:`start`."""
        return format_xml(self.live if live else self.config)

    async def capabilities(self) -> QEMUCaps:
        """This QEMU's capabilities (from the start, or the cache)."""
        if self._caps is None:
            self._caps = await CapsCache().get(self.binary)
        return self._caps

    async def netlink(self) -> LinkControl:
        """The netlink facade: the injected one, or one this handle opens and closes."""
        if self._netlink is not None:
            return self._netlink
        if self._own_netlink is None:
            self._own_netlink = Netlink()
        return self._own_netlink

    # -- starting and connecting ----------------------------------------------------------
    @classmethod
    def start(
        cls,
        defn: DomainDef,
        *,
        caps: QEMUCaps | None = None,
        state_root: StateRoot | Path | str | None = None,
        netlink: LinkControl | None = None,
        host_paths: HostPaths = DEFAULT_HOST_PATHS,
    ) -> _Opening:
        """Start ``defn``: ``dom = await Domain.start(defn)`` or ``async with Domain.start(…)``.

        ``caps`` defaults to the (cached) probe of the domain's emulator (``<emulator>``,
        else ``$QCTL_QEMU``, else qemu-system-x86_64). Nothing is created on the host when the
        command line cannot be built, and a failure at any later step leaves no tap, fd,
        process or state behind.
        """
        root = _root(state_root)

        async def opener() -> Domain:
            binary = _binary_for(defn)
            known = caps or await CapsCache().get(binary)
            started = await launch(defn, known, binary, root, netlink, host_paths)
            return cls(
                status=started.status,
                directory=started.directory,
                process=started.process,
                client=started.client,
                root=root,
                netlink=netlink,
                host_paths=host_paths,
                caps=known,
            )

        return _Opening(opener)

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
        binary = _binary_for(defn)
        known = caps or await CapsCache().get(binary)
        networks = NetworkStore(_root(state_root)).get
        return dry_run_argv(defn, known, networks=networks, binary=binary)

    @classmethod
    def connect(
        cls,
        name: str,
        *,
        state_root: StateRoot | Path | str | None = None,
        netlink: LinkControl | None = None,
        host_paths: HostPaths = DEFAULT_HOST_PATHS,
    ) -> _Opening:
        """Connect to the running domain ``name`` from its status file alone, and reconcile.

        If QEMU is gone, what the ledger holds is released, the state removed, and
        :class:`StateError` raised.
        """
        root = _root(state_root)

        async def opener() -> Domain:
            directory = root.domain(name)
            lock = await take_lock(directory)
            try:
                status = read_status(directory)
                stamp = status_stamp(directory)
                process = QEMUProcess(status.identity, directory.log_file)
                client = await _connect_unless_exiting(directory, process)
                if client is None:
                    failures = await release_all(
                        status.ledger,
                        domain=name,
                        netlink=netlink,
                        sysfs=host_paths.sysfs,
                        networks=NetworkStore.for_host(root, host_paths.sysfs),
                    )
                    if failures:
                        error = StateError(
                            f"domain {name!r} is not running (QEMU exited); some of its "
                            f"resources could not be released: {failures[0]}"
                        )
                        for failure in failures[1:]:
                            error.add_note(str(failure))
                        raise error
                    directory.remove()
                    raise StateError(
                        f"domain {name!r} is not running (QEMU exited); its resources "
                        "were released"
                    )
            finally:
                lock.release()
            dom = cls(
                status=status,
                directory=directory,
                process=process,
                client=client,
                root=root,
                netlink=netlink,
                host_paths=host_paths,
                stamp=stamp,
            )
            try:
                await dom.reconcile()
            except BaseException:
                await dom.aclose()
                raise
            return dom

        return _Opening(opener)

    @staticmethod
    def list(state_root: StateRoot | Path | str | None = None) -> list[DomainInfo]:
        """Every domain with a state directory, and whether its QEMU still runs."""
        root = _root(state_root)
        found = []
        for name in root.names():
            directory = root.domain(name)
            try:
                status = read_status(directory)
            except StateError:
                found.append(DomainInfo(name, None, False))
                continue
            running = QEMUProcess(status.identity, directory.log_file).alive()
            found.append(DomainInfo(name, status.identity.pid, running))
        return found

    # -- hot-plug ------------------------------------------------------------------------
    async def attach_device(
        self, device: str | InterfaceDef | HostdevDef, *, source: str | None = None
    ) -> InterfaceDef | HostdevDef:
        """Hot-plug an ``<interface>`` or ``<hostdev>`` (XML text or definition).

        Returns the device as the live XML shows it. Validated against the live domain
        (duplicate MAC/alias, address in use) and this QEMU's capabilities; any failure
        undoes exactly the steps done. ``source`` names the document in errors.
        """
        defn = parse_device(device, source=source) if isinstance(device, str) else device
        async with self._job():
            problems = validate_device(defn, self.live, live=True, source=source)
            if problems:
                raise problems[0]
            live = await self._attach(defn)
        self._publish(DeviceAdded(None, live.alias or ""))
        return live

    async def _attach(self, defn: InterfaceDef | HostdevDef) -> InterfaceDef | HostdevDef:
        if isinstance(defn, HostdevDef) or defn.type is InterfaceType.HOSTDEV:
            return await attach_vfio(self, defn)
        if defn.type is InterfaceType.NETWORK and defn.source and defn.source.network:
            network = self.networks.get(defn.source.network)
            if network.forward is not None and network.forward.mode is ForwardMode.HOSTDEV:
                return await self._attach_from_pool(defn, network)
        return await attach_interface(self, defn)

    async def _attach_from_pool(self, iface: InterfaceDef, network: NetworkDef) -> InterfaceDef:
        """A ``type='network'`` interface on a hostdev pool: one of its VFs, with VFIO.

        The live XML shows the interface as ``type='hostdev'`` on the allocated VF; the
        ledger remembers the pool, so releasing the device returns the VF to it.
        """
        assert network.forward is not None
        named = alias_for(self.live, iface)
        assert isinstance(named, InterfaceDef) and named.alias is not None
        device = await self.networks.allocate(network.name, self.name, named.alias)
        try:
            actual = dataclasses.replace(
                named,
                type=InterfaceType.HOSTDEV,
                source=InterfaceSourceDef(pci=PCIAddress.parse(device)),
                managed=network.forward.managed,
                model=None,
                driver=None,
            )
            live = await attach_vfio(self, actual, pool=(network.name, device))
        except BaseException:
            await asyncio.shield(self.networks.release(network.name, device))
            raise
        assert isinstance(live, InterfaceDef)
        return live

    async def detach_device(
        self,
        device: str | InterfaceDef | HostdevDef,
        *,
        wait: float = DEFAULT_DETACH_TIMEOUT,
    ) -> DetachResult:
        """Unplug a device named by alias, XML text or definition.

        Waits up to ``wait`` seconds for QEMU's DEVICE_DELETED. Then the device is gone
        and everything it held released (``DETACHED``), or it stays in the live XML as
        ``detaching`` (``PENDING``) and the event finishes the job whenever it comes.
        :class:`HotplugError` when the guest refuses the unplug (the device stays).
        """
        async with self._job():
            entry = self._find(device)
            alias = entry.alias
            self.record(entry.evolve(state=EntryState.DETACHING))
            removed = self.expect_unplug(alias)
            try:
                await self.monitor.device_del(alias)
            except QMPCommandError as exc:
                self.stop_expecting(alias, removed)
                if not is_not_found(exc):
                    self.record(entry)
                    raise HotplugError(
                        f"detaching {alias} failed: {exc}", alias=alias, stage="device_del"
                    ) from exc
                await device_removed(self, self.ledger.get(alias) or entry)
                return DetachResult.DETACHED
            except BaseException:
                # device_del may or may not have reached QEMU: its event finishes the job.
                self.stop_expecting(alias, removed)
                raise
        try:
            async with asyncio.timeout(wait):
                event = await asyncio.shield(removed)
        except TimeoutError:
            if not removed.done() or removed.cancelled():
                self.stop_expecting(alias, removed)
                log.info("domain %s: detach of %s pending", self.name, alias)
                return DetachResult.PENDING
            event = removed.result()  # it came just as the wait ended
        except BaseException:
            self.stop_expecting(alias, removed)
            raise
        self.stop_expecting(alias, removed, handled=True)
        if self._released:  # QEMU is gone, and with it the device and what it held
            return DetachResult.DETACHED
        if not isinstance(event, DeviceRemoved):
            async with self._job():
                current = self.ledger.get(alias)
                if current is not None:
                    self.record(current.evolve(state=EntryState.ATTACHED))
            raise HotplugError(
                f"unplug of {alias} rejected by the guest", alias=alias, stage="device_del"
            )
        async with self._job():
            current = self.ledger.get(alias)
            if current is not None:
                await device_removed(self, current)
        return DetachResult.DETACHED

    def _find(self, device: str | InterfaceDef | HostdevDef) -> LedgerEntry:
        """The ledger entry a detach request names (alias, MAC, or host address)."""
        if isinstance(device, str):
            if device.lstrip().startswith("<"):
                device = parse_device(device, source="<detach-device>")
            else:
                entry = self.ledger.get(device)
                if entry is None:
                    raise HotplugError(f"no device with alias {device!r}", alias=device)
                return entry
        if device.alias and (entry := self.ledger.get(device.alias)) is not None:
            return entry
        for live in self.live.interfaces:
            if isinstance(device, InterfaceDef) and device.mac and live.mac == device.mac:
                found = self.ledger.get(live.alias or "")
                if found is not None:
                    return found
        if isinstance(device, HostdevDef):
            for entry in self.ledger:
                if entry.host_device == str(device.source):
                    return entry
        raise HotplugError("no attached device matches the definition given")

    # -- events ----------------------------------------------------------------------------
    def events(self, *, maxsize: int = 256) -> EventStream:
        """A stream of this domain's typed events from now on (bounded, drops the oldest)."""
        stream = EventStream(maxsize, self._streams.remove)
        if self._closed or self._exited.is_set():
            stream.end()
        else:
            self._streams.append(stream)
        return stream

    def _publish(self, event: DomainEvent) -> None:
        for stream in list(self._streams):
            stream.deliver(event)

    async def _read_events(self, subscription: Any) -> None:
        with subscription:
            async for raw in subscription:
                event = from_qmp(raw)
                if event is None:
                    continue
                self._publish(event)
                if isinstance(event, DeviceRemoved | UnplugRejected):
                    self._on_device_event(event.alias, event)

    def _on_device_event(self, alias: str, event: DeviceRemoved | UnplugRejected) -> None:
        """Wake a waiting detach, or act on the event itself when no one waits (a late
        event, or one for a device removed behind qctl's back)."""
        waiter = self._unplug_waiters.get(alias)
        if waiter is not None and not waiter.done():
            waiter.set_result(event)
            return
        self._act_on_device_event(alias, event)

    def _act_on_device_event(self, alias: str, event: DomainEvent) -> None:
        """Finish a removal, or put a refused one back, in a job of its own."""
        if self._closed or self._released:
            return
        action = self._finish_late if isinstance(event, DeviceRemoved) else self._unrefuse
        task = asyncio.create_task(action(alias), name=f"{self}: {alias} after event")
        self._finishers.add(task)
        task.add_done_callback(self._finishers.discard)

    async def _finish_late(self, alias: str) -> None:
        async with self._job():
            entry = self.ledger.get(alias)
            if entry is not None:
                await device_removed(self, entry)

    async def _unrefuse(self, alias: str) -> None:
        async with self._job():
            entry = self.ledger.get(alias)
            if entry is not None and entry.state is EntryState.DETACHING:
                self.record(entry.evolve(state=EntryState.ATTACHED))

    def expect_unplug(self, alias: str) -> asyncio.Future[DomainEvent]:
        """A future set by the next DEVICE_DELETED or unplug refusal for ``alias``
        (shared with a detach of the same device already waiting)."""
        current = self._unplug_waiters.get(alias)
        if current is not None and not current.done():
            return current
        future: asyncio.Future[DomainEvent] = asyncio.get_running_loop().create_future()
        self._unplug_waiters[alias] = future
        return future

    def stop_expecting(
        self, alias: str, future: asyncio.Future[DomainEvent], *, handled: bool = False
    ) -> None:
        """Stop waiting on ``future``; later events for ``alias`` then act by themselves.

        An event that arrived but was not ``handled`` by the waiter is acted on now.
        """
        if self._unplug_waiters.get(alias) is future:
            del self._unplug_waiters[alias]
        if not handled and future.done() and not future.cancelled():
            self._act_on_device_event(alias, future.result())

    # -- the books -------------------------------------------------------------------------
    def record(self, entry: LedgerEntry) -> None:
        """Put ``entry`` in the ledger and write the status file."""
        self.ledger.put(entry)
        self._save()

    def forget(self, alias: str) -> None:
        """Drop ``alias`` from the ledger and write the status file (with a fresh snapshot
        of the live XML: a removal is never on a hurried path)."""
        self.ledger.remove(alias)
        self._save(snapshot=True)

    def _save(self, *, snapshot: bool = False) -> None:
        """Write the status file; the live XML in it is a snapshot that may lag behind.

        Rendering the whole domain costs more than a hot-plug step, and the ledger already
        says which devices exist (with the XML of hot-plugged ones): a reader merges the two
        (:func:`~qctl.qemu.devices.merge_live`). So an attach never renders it; a removal,
        which waits far longer for the guest anyway, renews it (``snapshot``).
        """
        if self._released:
            return
        if self._rendered is None or (snapshot and self._rendered[0] is not self.live):
            self._rendered = (self.live, format_xml(self.live))
        write_status(
            self.directory,
            Status(self.process.identity, self.binary, self.config, self.live, self.ledger),
            config_xml=self._config_xml,
            live_xml=self._rendered[1],
        )
        self._stamp = self._status_stamp()

    def _status_stamp(self) -> tuple[int, int, int] | None:
        return status_stamp(self.directory)

    def _refresh(self) -> None:
        """Take up the books another qctl process wrote since this handle last did.

        Several processes may hold a handle on one domain (there are several monitors);
        each job starts from the status file as it is, never from a stale copy.
        """
        stamp = self._status_stamp()
        if stamp == self._stamp or stamp is None:  # unchanged, or stopped meanwhile
            return
        status = read_status(self.directory)
        self.live, self.ledger = status.live, status.ledger
        self._stamp = stamp
        self._rendered = None  # the snapshot this handle rendered may show an older domain

    async def release_host_resources(self, entry: LedgerEntry) -> None:
        """Free what one ledger entry holds on the host (each step tolerates "already gone")."""
        await release_entry(entry, await self._host_side())

    async def _host_side(self) -> HostSide:
        return HostSide(await self.netlink(), self.host_paths.sysfs, self.networks, self.name)

    def devices_in_use(self) -> dict[PCIAddress, str]:
        """Host PCI devices held by any domain of this state root, as ``domain/alias``."""
        held = devices_held(self._root, besides=self.name)
        for entry in self.ledger:
            if entry.host_device:
                held[PCIAddress.parse(entry.host_device)] = f"{self.name}/{entry.alias}"
        return held

    async def reconcile(self) -> None:
        """Compare the ledger with QEMU's devices and finish or undo whatever was half done.

        An entry QEMU has is (now) attached; an entry QEMU lacks is released, whatever
        state it was in: its attach never completed, or its removal did while nobody watched.
        """
        async with self._job():
            present = await self.monitor.peripherals()
            for entry in list(self.ledger):
                if entry.alias in present:
                    if entry.state in (EntryState.ATTACHING, EntryState.UNCERTAIN):
                        self._adopt(entry)
                else:
                    await device_removed(self, entry)
            # A pool device allocated just before a crash, never recorded in the ledger.
            for held in self.networks.allocations():
                if held.domain == self.name and held.alias not in self.ledger:
                    await self.networks.release(held.network, held.device)

    def _adopt(self, entry: LedgerEntry) -> None:
        """An attach that QEMU completed but whose controller died: put it in the live XML."""
        aliases = {i.alias for i in self.live.interfaces} | {h.alias for h in self.live.hostdevs}
        if entry.device_xml and entry.alias not in aliases:
            self.live = with_device(self.live, parse_device(entry.device_xml, live=True))
        self.record(entry.evolve(state=EntryState.ATTACHED))

    # -- stopping ------------------------------------------------------------------------
    async def stop(self, *, force: bool = False, grace: float = 30.0) -> None:
        """Stop QEMU and release everything it held.

        Without ``force`` the guest is asked to power down (ACPI) and given ``grace``
        seconds; then QEMU is told to ``quit``; then killed. Idempotent.
        """
        if self._released:
            return
        async with self._job():
            if self.running and not force:
                with contextlib.suppress(QMPError, TimeoutError):
                    await self.monitor.powerdown()
                    async with asyncio.timeout(grace):
                        await self.process.wait()
            if self.running:
                with contextlib.suppress(QMPError, TimeoutError):
                    async with asyncio.timeout(5.0):
                        await self.monitor.quit()
                        await self.process.wait()
            if self.running:
                await self.process.stop(grace=1.0)
            await asyncio.shield(self._release())

    async def wait_exit(self) -> None:
        """Wait until QEMU has exited and its resources were released (or this handle
        was closed, which stops watching)."""
        await self._exited.wait()
        if not self._watcher.cancelled():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(self._watcher)

    async def aclose(self) -> None:
        """Disconnect from QEMU (it keeps running) and stop this handle's tasks. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for task in (self._watcher, self._reader, *self._finishers):
            task.cancel()
        for task in (self._watcher, self._reader, *self._finishers):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for future in self._unplug_waiters.values():
            future.cancel()
        for stream in list(self._streams):
            stream.end()
        await self.monitor.client.aclose()
        self._file_lock.close()
        if self._own_netlink is not None:
            await self._own_netlink.aclose()

    async def __aenter__(self) -> Domain:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- internals ---------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def _job(self) -> AsyncIterator[None]:
        """One job at a time on this domain, in this process and across processes."""
        async with self._lock:
            try:
                async with asyncio.timeout(LOCK_TIMEOUT):
                    await self._file_lock.acquire()
            except TimeoutError:
                raise StateError(
                    f"domain {self.name!r} is busy: another qctl process holds its lock"
                ) from None

            try:
                if not self._released:
                    self._refresh()
                yield
            finally:
                self._file_lock.release()

    async def _watch_exit(self) -> None:
        """Notice QEMU exiting on its own and release what it held, under the domain's
        file lock (best effort: a stuck holder must not keep the resources)."""
        code = await self.process.wait()
        log.info("domain %s: QEMU exited (status %s)", self.name, code)
        async with self._lock:
            locked = False
            with contextlib.suppress(TimeoutError, StateError):
                async with asyncio.timeout(LOCK_TIMEOUT):
                    await self._file_lock.acquire()
                    locked = True
            try:
                await asyncio.shield(self._release())
            finally:
                if locked:
                    self._file_lock.release()

    async def _release(self) -> None:
        """Give back what the books hold now that QEMU is gone, then remove the state (once).

        The books are taken from the status file as it is now (another process may have
        changed them, or already released them: then there is nothing to do). Every entry
        is released even when one fails; the state stays where anything could not be given
        back, so a later connect tries again.
        """
        if self._released:
            return
        self._released = True
        self._exited.set()
        for alias, future in self._unplug_waiters.items():
            if not future.done():  # QEMU is gone, and the device with it
                future.set_result(DeviceRemoved(None, alias))
        await self.monitor.client.aclose()
        try:
            stamp = self._status_stamp()
            if stamp is None:
                return  # someone else released it
            ledger = self.ledger if stamp == self._stamp else read_status(self.directory).ledger
            failures = await release_ledger(ledger, await self._host_side())
            for failure in failures:
                log.warning("domain %s: %s", self.name, failure)
            if not failures:
                self.directory.remove()
        finally:
            for stream in list(self._streams):
                stream.end()


async def _connect_unless_exiting(directory: DomainDir, process: QEMUProcess) -> QMPClient | None:
    """A monitor connection to a running QEMU, or None when QEMU has exited.

    A QEMU being killed closes its sockets before it turns into a zombie: a refused
    connection gives it a moment to finish exiting before it counts as unreachable.
    """
    if not process.alive():
        return None
    try:
        return await connect_free_monitor(directory)
    except StateError:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_EXIT_GRACE):
                await process.wait()
        if process.alive():
            raise
        return None


def status_stamp(directory: DomainDir) -> tuple[int, int, int] | None:
    """What identifies the status file's current version (None when it is gone)."""
    try:
        info = directory.status_file.stat()
    except FileNotFoundError:
        return None
    return (info.st_ino, info.st_size, info.st_mtime_ns)
