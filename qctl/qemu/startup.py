"""Starting QEMU for a domain, as one transaction.

Steps, each pushing its undo on an ``AsyncExitStack``:

1. plan the domain against the capabilities and build the command line once with dummy
   fds, so a configuration that cannot be built (or whose disk images are missing) is
   refused before the host is touched;
2. the state directory (refused when a status file says the domain runs), under its lock;
3. taps and vhost-net fds for every NIC (:mod:`qctl.qemu.prepare`);
4. listening monitor sockets, passed to QEMU as fds: qctl can connect at once, and a
   QEMU that dies early is noticed as the connection failing;
5. QEMU itself, paused (``-S``), inheriting only those fds;
6. the monitor connection; ``set_link`` for links that start down; the ptys QEMU opened
   for ``<serial type='pty'>`` (:mod:`qctl.qemu.chardev`);
7. the status file (live XML + ledger), then ``cont``.

A failure anywhere unwinds exactly the steps done, shielded from cancellation; the original
error is raised, rollback failures attached to it as notes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path

from qctl.caps import QEMUCaps, locate_install
from qctl.conf import (
    DomainDef,
    HostdevDef,
    InterfaceDef,
    InterfaceType,
    LinkState,
    format_xml,
    missing_images,
)
from qctl.errors import QMPError, QMPTimeoutError, StateError
from qctl.host import LinkControl, Netlink, PCIDevice, Sysfs
from qctl.qemu.chardev import with_pty_paths
from qctl.qemu.claims import claim_devices, devices_held, devices_lock
from qctl.qemu.command import build_command
from qctl.qemu.confine import confinement_for, hand_vfio_group, open_files
from qctl.qemu.hostdevpool import take_pool_devices
from qctl.qemu.hostpaths import HostPaths
from qctl.qemu.ledger import DeviceKind, EntryState, Ledger, LedgerEntry
from qctl.qemu.migratable import as_given, resolve_machine
from qctl.qemu.monitor import Monitor
from qctl.qemu.network import NetworkStore
from qctl.qemu.nic import NICResources
from qctl.qemu.orphan import clear_start, note_start, reap_cut_start
from qctl.qemu.placement import netdev_id
from qctl.qemu.plan import features_from_caps, plan
from qctl.qemu.prepare import PreparedHost, prepare_interfaces
from qctl.qemu.process import Launcher, QEMUProcess
from qctl.qemu.state import DirectoryGone, DomainDir, FileLock, StateRoot
from qctl.qemu.status import Stamp, Status, write_status
from qctl.qemu.txn import take_lock, unwind
from qctl.qemu.vfio import VFIODevice, prepare_vfio
from qctl.qmp import QMPClient, connect_first, connect_qmp
from qctl.record import record
from qctl.types import PCIAddress

__all__ = [
    "CONNECT_TIMEOUT",
    "Launched",
    "connect_free_monitor",
    "launch",
]

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 10.0
#: how many times a start makes its directory when another command removes it first
_MAKE_TRIES = 3


@record(frozen=False)
class Launched:
    """A started domain: its state directory, process, monitor connection and status (and
    the stamp of the status file as written, under the start's lock)."""

    directory: DomainDir
    process: QEMUProcess
    client: QMPClient
    status: Status
    stamp: Stamp


async def _made_and_locked(directory: DomainDir) -> FileLock:
    """Make the domain's directory and take its lock. Until the start has its lock and its
    intent, another command on the name may take the directory for one a start killed
    before its intent left, and remove it (:mod:`~qctl.qemu.orphan`): it is made again, a
    few times at most."""
    for _ in range(_MAKE_TRIES):
        try:
            directory.make()  # (removed again between its mkdir and its open: made again)
            return await take_lock(directory)
        except DirectoryGone:
            continue
    raise StateError(
        f"cannot start domain {directory.name!r}: its state directory was removed by another "
        f"command each of the {_MAKE_TRIES} times it was made"
    )


async def _prepare_vfio_devices(
    domain: DomainDef,
    stack: contextlib.AsyncExitStack,
    netlink: LinkControl,
    host_paths: HostPaths,
    held: dict[PCIAddress, str],
) -> dict[str, dict[str, object]]:
    """The host side of every VFIO device (see :mod:`qctl.qemu.vfio`), undo on ``stack``.

    Returns, by alias, what the ledger must remember (saved VF settings, original driver).
    Until the status file is first written these live only in memory: a crash in that short
    window loses them, which a hot-plug (written before each change) does not.
    """
    notes: dict[str, dict[str, object]] = {}
    devices: list[InterfaceDef | HostdevDef] = [
        *(i for i in domain.interfaces if i.type is InterfaceType.HOSTDEV),
        *domain.hostdevs,
    ]
    for device in devices:
        assert device.alias is not None
        vfio = VFIODevice.of(device)
        await prepare_vfio(
            vfio,
            stack,
            netlink=netlink,
            sysfs=host_paths.sysfs,
            in_use=held,
            note=_noting(notes.setdefault(device.alias, {})),
        )
        held[vfio.address] = f"{domain.name}/{device.alias}"
    return notes


def _noting(changes: dict[str, object]) -> Callable[..., Awaitable[None]]:
    """A ``note`` for :func:`prepare_vfio` that keeps the changes for the first status write."""

    async def note(**more: object) -> None:
        changes.update(more)

    return note


def _vfio_groups(domain: DomainDef, sysfs: Sysfs) -> set[int]:
    """The IOMMU groups of the domain's VFIO devices (their /dev/vfio/N QEMU opens)."""
    addresses = [
        *(i.source.pci for i in domain.interfaces if i.type is InterfaceType.HOSTDEV and i.source),
        *(h.source for h in domain.hostdevs),
    ]
    groups = (PCIDevice(a, sysfs=sysfs).iommu_group() for a in addresses if a is not None)
    return {g for g in groups if g is not None}


def _has_vfio(domain: DomainDef) -> bool:
    return bool(domain.hostdevs) or any(i.type is InterfaceType.HOSTDEV for i in domain.interfaces)


def initial_ledger(
    domain: DomainDef, prepared: PreparedHost, notes: dict[str, dict[str, object]]
) -> Ledger:
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
                tap_index=nic.tap_index if nic else None,
                guest_address=str(iface.address) if iface.address else None,
                host_device=str(iface.source.pci) if hostdev and iface.source else None,
            )
        )
    for dev in domain.hostdevs:
        ledger.put(hostdev_entry(dev, EntryState.ATTACHED))
    for alias, changes in notes.items():
        entry = ledger.get(alias)
        assert entry is not None
        ledger.put(entry.evolve(**changes))
    return ledger


def hostdev_entry(dev: HostdevDef, state: EntryState) -> LedgerEntry:
    """The ledger entry of a ``<hostdev>``; an unassigned one (held, QEMU never has it)
    keeps its XML, which says so."""
    assert dev.alias is not None
    return LedgerEntry(
        alias=dev.alias,
        kind=DeviceKind.HOSTDEV,
        state=state,
        guest_address=str(dev.address) if dev.address else None,
        host_device=str(dev.source),
        device_xml=format_xml(dev) if dev.unassigned else None,
    )


def _listen(path: Path) -> socket.socket:
    """A listening UNIX socket (0600) for QEMU's monitor."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(path))
        os.chmod(path, 0o600)
        sock.listen(8)
    except BaseException:
        sock.close()
        raise
    return sock


async def connect_started(directory: DomainDir, process: QEMUProcess) -> QMPClient:
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


async def launch(
    defn: DomainDef,
    caps: QEMUCaps,
    binary: str,
    root: StateRoot,
    netlink: LinkControl | None,
    host_paths: HostPaths,
    launcher: Launcher,
    *,
    incoming: bool = False,
    die_with_owner: bool = False,
) -> Launched:
    """Start ``defn`` (see the module for the steps); nothing is left behind on failure.

    With ``incoming`` QEMU waits for a migration (``-incoming defer``) and stays paused.
    """
    planned = resolve_machine(plan(defn, caps, live=incoming), caps)
    features = features_from_caps(caps)
    dry_nics = {i.alias: NICResources(tap_fds=("0",)) for i in planned.interfaces if i.alias}
    build_command(planned, features, dry_nics, binary=binary, monitor="fd=0")
    confinement = confinement_for(caps, confine=host_paths.confine, user=host_paths.qemu_user)
    for missing in missing_images(planned):  # disk images: checked before the host is touched
        raise missing

    directory = root.domain(planned.name)
    lock = await _made_and_locked(directory)
    stack = contextlib.AsyncExitStack()
    claims = contextlib.AsyncExitStack()  # the devices lock, until the status file has them
    own_link: Netlink | None = None
    try:
        await reap_cut_start(directory, remove=False)
        if directory.status_file.exists():
            raise StateError(f"domain {planned.name!r} is already running")
        stack.callback(directory.remove)
        note_start(directory)  # before anything QEMU could hold is made
        link: LinkControl
        if netlink is None:
            link = own_link = Netlink()
            stack.push_async_callback(own_link.aclose)
        else:
            link = netlink
        # type='network' interfaces on hostdev pools: a pool device each, as hostdev NICs
        pooled = await take_pool_devices(
            planned, stack, NetworkStore.for_host(root, host_paths.sysfs)
        )
        planned = pooled.domain
        prepared = await prepare_interfaces(
            planned,
            stack,
            netlink=link,
            networks=NetworkStore(root).get,
            tun_path=host_paths.tun,
            vhost_path=host_paths.vhost_net,
        )
        if _has_vfio(planned):
            await claims.enter_async_context(devices_lock(root))
        held = devices_held(root, besides=planned.name) if _has_vfio(planned) else {}
        notes = await _prepare_vfio_devices(prepared.domain, stack, link, host_paths, held)
        claim_devices(root, {a: o for a, o in held.items() if o.startswith(f"{planned.name}/")})
        for alias, allocation in pooled.pools.items():  # the ledger returns them to the pool
            notes.setdefault(alias, {})["pool"] = allocation
        # Confinement: files QEMU writes are opened here; VFIO groups go to the QEMU user.
        passed = contextlib.ExitStack()
        stack.callback(passed.close)
        files = open_files(prepared.domain, passed)
        if confinement is not None:
            for group in _vfio_groups(prepared.domain, host_paths.sysfs):
                hand_vfio_group(group, confinement, stack, vfio_dir=host_paths.vfio_dir)
        listeners = [_listen(path) for path in directory.qmp_sockets]
        for listener in listeners:
            stack.callback(listener.close)
        nics = {
            alias: NICResources(
                tap_fds=tuple(str(fd) for fd in nic.tap_fds),
                vhost_fds=tuple(str(fd) for fd in nic.vhost_fds),
                tap_name=nic.tap_name,
            )
            for alias, nic in prepared.nics.items()
        }
        monitors = [f"fd={listener.fileno()}" for listener in listeners]
        argv = build_command(
            prepared.domain,
            features,
            nics,
            binary=binary,
            monitor=monitors[0],
            extra_monitors=monitors[1:],
            pidfile=str(directory.pid_file),
            confinement=confinement,
            files=files,
            incoming="defer" if incoming else None,
            console_dir=str(directory.path),
        )
        log.debug("starting %s: %s", planned.name, " ".join(argv))
        listener_fds = [listener.fileno() for listener in listeners]
        file_fds = [int(f.fd) for f in files.values()]
        process = await launcher.spawn(
            argv,
            log_path=directory.log_file,
            pass_fds=[*prepared.fds, *listener_fds, *file_fds],
            env=locate_install(binary).environ(),  # the binary's own modules
            die_with_owner=die_with_owner,
        )
        passed.close()  # QEMU has its copies
        stack.push_async_callback(process.stop, 1.0)
        for listener in listeners:
            listener.close()
        client = await connect_started(directory, process)
        stack.push_async_callback(client.aclose)
        monitor = Monitor(client)
        for iface in prepared.domain.interfaces:
            if iface.link_state is LinkState.DOWN and iface.alias:
                await monitor.set_link(iface.alias, False)
        live = await with_pty_paths(monitor, prepared.domain)  # pty paths into the live XML
        status = Status(
            identity=process.identity,
            binary=binary,
            config=as_given(defn) if incoming else defn,
            live=live,
            ledger=initial_ledger(prepared.domain, prepared, notes),
        )
        stamp = await asyncio.to_thread(write_status, directory, status)
        clear_start(directory)
        if not incoming:
            await monitor.resume()
        prepared.release_fds()
        stack.pop_all()
    except BaseException as exc:
        await unwind(stack, exc, "start")
        raise
    finally:
        await claims.aclose()
        lock.release()
    if own_link is not None:
        await own_link.aclose()
    log.info("started %s (pid %d)", planned.name, process.pid)
    return Launched(directory, process, client, status, stamp)


async def connect_free_monitor(
    directory: DomainDir, *, sent: asyncio.Future[None] | None = None
) -> QMPClient:
    """Connect to a monitor no other client is using.

    A monitor that serves another client accepts the connection but sends no greeting
    until that client leaves, so all monitors are tried at once and the first to greet is
    kept (:func:`~qctl.qmp.connect_first`): busy ones cost no wait, and a QEMU that is
    merely slow (TCG under load) has the full timeout to answer on any of them.

    QEMU's run state is asked with the handshake (one round trip for both), for the
    reconciling that follows a connect (see :meth:`~qctl.qemu.monitor.Monitor.status`);
    ``sent`` is set once both are on their way (:meth:`~qctl.qmp.QMPClient.connect`).
    """
    try:
        return await connect_first(
            directory.qmp_sockets, timeout=CONNECT_TIMEOUT, ask="query-status", sent=sent
        )
    except QMPTimeoutError as exc:
        raise StateError(
            f"all {len(directory.qmp_sockets)} monitors of {directory.name!r} are in use by "
            f"other qctl processes, or QEMU does not answer: {exc}"
        ) from exc
    except QMPError as exc:
        raise StateError(f"cannot reach the monitor of {directory.name!r}: {exc}") from exc
