"""The :class:`Domain` handle: start, connect to, watch and stop one QEMU.

A domain's truth lives in its state directory (see :mod:`qctl.qemu.state`): the live XML and
the ledger of host resources. Any qctl process can :meth:`Domain.connect` by name from that
file alone; the process that started QEMU is not special.

Start is a transaction. Every step pushes its undo on an ``AsyncExitStack`` (state dir, taps
and vhost-net fds, the monitor socket, the QEMU process), and a failure anywhere unwinds
exactly the steps done, shielded from cancellation, with the original error kept.

QEMU exiting on its own (guest poweroff, crash, ``kill -9``) is noticed by a watcher task
(through the child's exit or a pidfd) that releases what the ledger holds. A process that
finds QEMU gone when it connects does the same.

One job at a time per domain: an ``asyncio.Lock`` inside this process plus the state
directory's file lock across processes. Closing a handle (:meth:`aclose`) only disconnects;
it never stops QEMU.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qctl.caps import CapsCache, QEMUCaps
from qctl.conf import (
    DomainDef,
    HostdevDef,
    InterfaceType,
    LinkState,
    format_xml,
    parse_domain,
)
from qctl.errors import QctlError, QMPError, StateError, add_rollback_note
from qctl.host import TUN_PATH, VHOST_NET_PATH, LinkControl, Netlink, delete_tap
from qctl.qemu.command import build_command
from qctl.qemu.ledger import DeviceKind, EntryState, Ledger, LedgerEntry
from qctl.qemu.monitor import Monitor
from qctl.qemu.network import NetworkStore
from qctl.qemu.nic import NICResources
from qctl.qemu.placement import netdev_id
from qctl.qemu.plan import features_from_caps, plan
from qctl.qemu.prepare import PreparedHost, prepare_interfaces
from qctl.qemu.process import ProcessIdentity, QEMUProcess
from qctl.qemu.state import DomainDir, StateRoot
from qctl.qmp import QMPClient, connect_qmp

__all__ = ["DEFAULT_BINARY", "Domain", "DomainInfo", "HostPaths"]

log = logging.getLogger(__name__)

DEFAULT_BINARY = "qemu-system-x86_64"
STATUS_VERSION = 1
LOCK_TIMEOUT = 30.0
CONNECT_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class HostPaths:
    """Device nodes the host side opens; tests point them elsewhere."""

    tun: str = TUN_PATH
    vhost_net: str = VHOST_NET_PATH


@dataclass(frozen=True, slots=True)
class DomainInfo:
    """A line of ``qctl list``: a domain with a state directory, and whether QEMU runs."""

    name: str
    pid: int | None
    running: bool


def _default_binary(defn: DomainDef) -> str:
    return defn.devices.emulator or os.environ.get("QCTL_QEMU") or DEFAULT_BINARY


def _ledger_for(domain: DomainDef, prepared: PreparedHost) -> Ledger:
    """The ledger of a freshly started domain: every NIC and host device, attached."""
    ledger = Ledger()
    for iface in domain.interfaces:
        assert iface.alias is not None
        hostdev = iface.type is InterfaceType.HOSTDEV
        nic = prepared.nics.get(iface.alias)
        ledger.put(
            LedgerEntry(
                alias=iface.alias,
                kind=DeviceKind.HOSTDEV_INTERFACE if hostdev else DeviceKind.INTERFACE,
                state=EntryState.ATTACHED,
                netdev_id=None if hostdev else netdev_id(iface.alias),
                tap=nic.tap_name if nic else None,
                guest_address=str(iface.address) if iface.address else None,
                host_device=str(iface.source.pci) if hostdev and iface.source else None,
            )
        )
    for dev in domain.hostdevs:
        assert dev.alias is not None
        ledger.put(_hostdev_entry(dev))
    return ledger


def _hostdev_entry(dev: HostdevDef) -> LedgerEntry:
    assert dev.alias is not None
    return LedgerEntry(
        alias=dev.alias,
        kind=DeviceKind.HOSTDEV,
        state=EntryState.ATTACHED,
        guest_address=str(dev.address) if dev.address else None,
        host_device=str(dev.source),
    )


def _listen(path: Path) -> socket.socket:
    """A listening UNIX socket (0600) for QEMU's monitor: we can connect before QEMU accepts."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(path))
        os.chmod(path, 0o600)
        sock.listen(1)
    except BaseException:
        sock.close()
        raise
    return sock


async def _unwind(stack: contextlib.AsyncExitStack, error: BaseException, step: str) -> None:
    """Run every pushed undo, shielded from cancellation; failures become notes on ``error``."""
    try:
        await asyncio.shield(stack.aclose())
    except Exception as failure:  # kept as a note: the original error wins
        log.warning("rollback after failed %s: %s", step, failure)
        add_rollback_note(error, failure, step)


async def _release_host(ledger: Ledger, netlink: LinkControl | None) -> None:
    """Delete the taps the ledger holds (normally already gone with QEMU's fds)."""
    taps = sorted(ledger.taps())
    if not taps:
        return
    if netlink is not None:
        for tap in taps:
            await delete_tap(tap, netlink=netlink)
        return
    async with Netlink() as own:
        for tap in taps:
            await delete_tap(tap, netlink=own)


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
        live: DomainDef,
        ledger: Ledger,
        directory: DomainDir,
        process: QEMUProcess,
        client: QMPClient,
        binary: str,
        netlink: LinkControl | None = None,
    ) -> None:
        self.live = live
        self.ledger = ledger
        self.directory = directory
        self.process = process
        self.monitor = Monitor(client)
        self.binary = binary
        self._netlink = netlink
        self._lock = asyncio.Lock()
        self._released = False
        self._closed = False
        self._exited = asyncio.Event()
        self._watcher = asyncio.create_task(self._watch_exit(), name=f"qctl {self.name}: exit")

    def __repr__(self) -> str:
        return f"<Domain {self.name} pid={self.process.pid}>"

    @property
    def name(self) -> str:
        """The domain's name."""
        return self.live.name

    @property
    def running(self) -> bool:
        """True until QEMU has exited."""
        return not self._exited.is_set() and self.process.alive()

    def live_xml(self) -> str:
        """The live domain XML: aliases, addresses, taps and the vhost choice filled in."""
        return format_xml(self.live)

    # -- starting --------------------------------------------------------------------
    @classmethod
    def start(
        cls,
        defn: DomainDef,
        *,
        caps: QEMUCaps | None = None,
        state_root: StateRoot | Path | str | None = None,
        netlink: LinkControl | None = None,
        host_paths: HostPaths = HostPaths(),
    ) -> _Opening:
        """Start ``defn``: ``dom = await Domain.start(defn)`` or ``async with Domain.start(…)``.

        ``caps`` defaults to the (cached) probe of the domain's emulator. Nothing is created
        on the host when the command line cannot be built, and a failure at any later step
        leaves no tap, fd, process or state behind.
        """
        root = state_root if isinstance(state_root, StateRoot) else StateRoot(state_root)
        return _Opening(lambda: cls._start(defn, caps, root, netlink, host_paths))

    @classmethod
    async def _start(
        cls,
        defn: DomainDef,
        caps: QEMUCaps | None,
        root: StateRoot,
        netlink: LinkControl | None,
        host_paths: HostPaths,
    ) -> Domain:
        binary = _default_binary(defn)
        if caps is None:
            caps = await CapsCache().get(binary)
        planned = plan(defn, caps)
        features = features_from_caps(caps)
        # Dry run: refuse a command line that cannot be built before touching the host.
        dry_nics = {
            i.alias: NICResources(tap_fds=("0",))
            for i in planned.interfaces
            if i.alias is not None
        }
        build_command(planned, features, dry_nics, binary=binary, monitor="fd=0")

        root.ensure()
        directory = root.domain(planned.name)
        lock = await _take_lock(directory)
        stack = contextlib.AsyncExitStack()
        try:
            if directory.status_file.exists():
                raise StateError(f"domain {planned.name!r} is already running")
            stack.callback(directory.remove)
            link: LinkControl
            own_link: Netlink | None = None
            if netlink is None:
                link = own_link = Netlink()
                stack.push_async_callback(own_link.aclose)
            else:
                link = netlink
            networks = NetworkStore(root)
            prepared = await prepare_interfaces(
                planned,
                stack,
                netlink=link,
                networks=networks.get,
                tun_path=host_paths.tun,
                vhost_path=host_paths.vhost_net,
            )
            listener = _listen(directory.qmp_socket)
            stack.callback(listener.close)
            nics = {
                alias: NICResources(
                    tap_fds=tuple(str(fd) for fd in nic.tap_fds),
                    vhost_fds=tuple(str(fd) for fd in nic.vhost_fds),
                    tap_name=nic.tap_name,
                )
                for alias, nic in prepared.nics.items()
            }
            argv = build_command(
                prepared.domain, features, nics, binary=binary, monitor=f"fd={listener.fileno()}"
            )
            log.debug("starting %s: %s", planned.name, " ".join(argv))
            process = await QEMUProcess.spawn(
                argv, log_path=directory.log_file, pass_fds=[*prepared.fds, listener.fileno()]
            )
            stack.push_async_callback(process.stop, 1.0)
            listener.close()
            client = await _connect_started(directory, process)
            stack.push_async_callback(client.aclose)
            monitor = Monitor(client)
            for iface in prepared.domain.interfaces:
                if iface.link_state is LinkState.DOWN and iface.alias:
                    await monitor.set_link(iface.alias, False)
            ledger = _ledger_for(prepared.domain, prepared)
            _write_status(directory, prepared.domain, ledger, process.identity, binary)
            await monitor.resume()
            prepared.release_fds()
            stack.pop_all()
        except BaseException as exc:
            await _unwind(stack, exc, "start")
            raise
        finally:
            lock.release()
        if own_link is not None:
            await own_link.aclose()
        log.info("started %s (pid %d)", planned.name, process.pid)
        return cls(
            live=prepared.domain,
            ledger=ledger,
            directory=directory,
            process=process,
            client=client,
            binary=binary,
            netlink=netlink,
        )

    # -- connecting ----------------------------------------------------------------------
    @classmethod
    def connect(
        cls,
        name: str,
        *,
        state_root: StateRoot | Path | str | None = None,
        netlink: LinkControl | None = None,
    ) -> _Opening:
        """Connect to the running domain ``name`` from its status file alone.

        If QEMU is gone, what the ledger holds is released, the state removed, and
        :class:`StateError` raised.
        """
        root = state_root if isinstance(state_root, StateRoot) else StateRoot(state_root)
        return _Opening(lambda: cls._connect(name, root, netlink))

    @classmethod
    async def _connect(cls, name: str, root: StateRoot, netlink: LinkControl | None) -> Domain:
        directory = root.domain(name)
        lock = await _take_lock(directory)
        try:
            status = directory.read_status()
            try:
                identity = ProcessIdentity(int(status["pid"]), int(status["start_time"]))
                live = parse_domain(status["live_xml"], source=str(directory.status_file))
                ledger = Ledger.from_json(status["ledger"])
                binary = str(status["binary"])
            except (KeyError, TypeError, ValueError, QctlError) as exc:
                raise StateError(f"status file {directory.status_file} is damaged: {exc}") from exc
            process = QEMUProcess(identity, directory.log_file)
            if not process.alive():
                await _release_host(ledger, netlink)
                directory.remove()
                raise StateError(
                    f"domain {name!r} is not running (QEMU exited); its resources were released"
                )
            client = await _connect_running(directory)
        finally:
            lock.release()
        return cls(
            live=live,
            ledger=ledger,
            directory=directory,
            process=process,
            client=client,
            binary=binary,
            netlink=netlink,
        )

    @staticmethod
    def list(state_root: StateRoot | Path | str | None = None) -> list[DomainInfo]:
        """Every domain with a state directory, and whether its QEMU still runs."""
        root = state_root if isinstance(state_root, StateRoot) else StateRoot(state_root)
        found = []
        for name in root.names():
            try:
                status = root.domain(name).read_status()
                identity = ProcessIdentity(int(status["pid"]), int(status["start_time"]))
            except (StateError, KeyError, TypeError, ValueError):
                found.append(DomainInfo(name, None, False))
                continue
            running = QEMUProcess(identity, Path("/dev/null")).alive()
            found.append(DomainInfo(name, identity.pid, running))
        return found

    # -- stopping ------------------------------------------------------------------------
    async def stop(self, *, force: bool = False, grace: float = 30.0) -> None:
        """Stop QEMU and release everything it held.

        Without ``force`` the guest is asked to power down (ACPI) and given ``grace``
        seconds; then QEMU is told to ``quit``; then killed. Idempotent.
        """
        async with self._job():
            if self.running and not force:
                with contextlib.suppress(QMPError):
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
        """Wait until QEMU has exited and its resources were released."""
        await self._exited.wait()
        await asyncio.shield(self._watcher)

    async def aclose(self) -> None:
        """Disconnect from QEMU (it keeps running) and stop the watcher. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if not self._watcher.done():
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        await self.monitor.client.aclose()

    async def __aenter__(self) -> Domain:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- internals ---------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def _job(self) -> AsyncIterator[None]:
        """One job at a time on this domain, in this process and across processes."""
        async with self._lock:
            lock = await _take_lock(self.directory)
            try:
                yield
            finally:
                lock.release()

    async def _watch_exit(self) -> None:
        """Notice QEMU exiting on its own and release what it held."""
        code = await self.process.wait()
        log.info("domain %s: QEMU exited (status %s)", self.name, code)
        async with self._lock:
            await asyncio.shield(self._release())

    async def _release(self) -> None:
        """Release the ledger's host resources and remove the state (once)."""
        if self._released:
            return
        self._released = True
        self._exited.set()
        await self.monitor.client.aclose()
        await _release_host(self.ledger, self._netlink)
        self.directory.remove()


async def _take_lock(directory: DomainDir) -> Any:
    try:
        async with asyncio.timeout(LOCK_TIMEOUT):
            return await directory.lock()
    except TimeoutError:
        raise StateError(
            f"domain {directory.name!r} is busy: another qctl process holds its lock"
        ) from None


def _write_status(
    directory: DomainDir,
    live: DomainDef,
    ledger: Ledger,
    identity: ProcessIdentity,
    binary: str,
) -> None:
    directory.write_status(
        {
            "version": STATUS_VERSION,
            "name": live.name,
            "pid": identity.pid,
            "start_time": identity.start_time,
            "binary": binary,
            "live_xml": format_xml(live),
            "ledger": ledger.to_json(),
        }
    )


async def _connect_started(directory: DomainDir, process: QEMUProcess) -> QMPClient:
    """Connect to a QEMU we just started, or report why it exited instead.

    When QEMU dies during start-up the connection fails too; its exit status and stderr
    say why, so they win over the connection error.
    """
    connecting = asyncio.ensure_future(connect_qmp(directory.qmp_socket, timeout=CONNECT_TIMEOUT))
    exited = asyncio.ensure_future(process.wait())
    try:
        done, _ = await asyncio.wait({connecting, exited}, return_when=asyncio.FIRST_COMPLETED)
        if connecting in done and connecting.exception() is None:
            return connecting.result()
        if exited not in done:
            # The connection failed while QEMU still looked alive: give it a moment to exit.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2.0):
                    await asyncio.shield(exited)
        if exited.done():
            raise process.failure("QEMU exited during start-up")
        return connecting.result()
    finally:
        exited.cancel()
        if not connecting.done():
            connecting.cancel()
            with contextlib.suppress(BaseException):
                await connecting


async def _connect_running(directory: DomainDir) -> QMPClient:
    try:
        return await connect_qmp(directory.qmp_socket, timeout=CONNECT_TIMEOUT)
    except QMPError as exc:
        raise StateError(
            f"cannot reach the monitor of {directory.name!r} (is another qctl process "
            f"connected to it?): {exc}"
        ) from exc

