"""Hot-plug and unplug as transactions, with the ledger telling the truth at every step.

Every function here takes a :class:`~qctl.qemu.runtime.DomainRuntime`; this module owns
attach, detach, reconciliation and late removals from top to bottom.

Attach an interface (user, ethernet, bridge, network in bridge mode)::

    step        does                                         its undo (pushed before it acts)
    validate    against the live domain and the caps         -
    tap         tap on its bridge, vhost-net fds             our fds closed (tap dies with them)
    intent      ledger entry ``attaching`` (tap, fd names)   release by the ledger, then forget
    getfd       each fd passed by name                       closefd, unless QEMU refused getfd
    netdev_add  QEMU takes the named fds over                netdev_del, unless QEMU refused it
    device_add                                               unplug and wait, unless refused
    set_link    down, when ``<link state='down'/>``          -
    commit      live XML gains the device; ``attached``      -
                (written with the job's end, not awaited here)

Attach a host device (``<hostdev>``, ``type='hostdev'`` interface, or a VF taken from a
hostdev pool for a ``type='network'`` interface)::

    pool        a free VF from the pool (pool interfaces)    returned, until the intent has it
    intent      entry ``attaching`` + claim, under the       release by the ledger, then forget
                state root's devices lock
    host        VF MAC/VLAN saved to the ledger, then set;
                managed: original driver noted, vfio-pci
    device_add                                               unplug and wait, unless refused
    commit      live XML gains the device; ``attached``      -

Host resources have one undo: :func:`~qctl.qemu.release.release_entry`, driven by the
ledger entry, used by rollback, detach, reconciliation and QEMU's exit alike.

Rollback never forgets what it cannot prove gone. An undo that fails or is cancelled makes
the entry ``uncertain`` and the undos after it are skipped, so the entry keeps its tap,
netdev, VF and pool entry until its DEVICE_DELETED or the next reconciliation settles it.
A command QEMU refused created nothing, so its undo is skipped: a rollback never deletes a
netdev or device of the same id that it did not create. The caller sees a
:class:`~qctl.errors.HotplugError` naming the device and the stage, the original error as
its cause (cancellation, and an abort as :class:`~qctl.errors.JobAbortedError`, as they are).

Detach::

    find        the entry named by alias, MAC or host address
    intent      entry ``detaching``
    device_del  (QEMU's "not found": already gone, finish the books)
    -- the job lock is let go: other jobs go on while the guest answers --
    wait        DEVICE_DELETED, up to ``wait`` seconds; else ``pending``
    finish      netdev_del, fds closed, release by the ledger, forget

A late DEVICE_DELETED (after a ``pending`` detach, or one nobody waited for) finishes the
books in a job of its own; a late unplug refusal puts the device back to ``attached``.

Reconcile (on connect, when no other job runs): entries QEMU has are adopted (attaching,
uncertain) or asked again (detaching: QEMU's answer tells whether the first request
reached it); entries QEMU lacks are finished; pool VFs allocated to the domain but never
recorded are returned.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import NoReturn

from qctl.caps import Capability, QEMUCaps
from qctl.conf import (
    DomainDef,
    ForwardMode,
    HostdevDef,
    InterfaceDef,
    InterfaceType,
    LinkState,
    LiveHostdev,
    LiveInterface,
    NetworkDef,
    TeamingType,
    as_live,
    format_xml,
    parse_device,
    review_device,
)
from qctl.errors import HotplugError, QMPCommandError, StateError, UnsupportedError
from qctl.host import PCIDevice
from qctl.qemu.claims import claim_devices, devices_lock, stray_allocations
from qctl.qemu.confine import confinement_for, hand_vfio_group
from qctl.qemu.devices import with_device, without_device
from qctl.qemu.events import DeviceAdded, DeviceRemoved, DomainEvent, UnplugRejected
from qctl.qemu.hostdevpool import pool_interface
from qctl.qemu.ledger import DeviceKind, EntryState, LedgerEntry
from qctl.qemu.monitor import is_not_found, is_unplug_in_progress
from qctl.qemu.nic import NICResources, hostdev_props, interface_device_props, netdev_props
from qctl.qemu.placement import alias_for, netdev_id, place_device
from qctl.qemu.plan import check_interface_support, random_mac
from qctl.qemu.prepare import bridge_of, prepare_interface
from qctl.qemu.runstate import from_status
from qctl.qemu.runtime import DomainRuntime
from qctl.qemu.txn import to_the_end, unwind
from qctl.qemu.vfio import VFIODevice, prepare_vfio

__all__ = [
    "DEFAULT_DETACH_TIMEOUT",
    "DetachResult",
    "attach",
    "detach",
    "device_kind",
    "device_removed",
    "find_entry",
    "on_unclaimed",
    "reconcile",
]

log = logging.getLogger(__name__)

#: how long :func:`detach` waits for DEVICE_DELETED before saying "pending"
DEFAULT_DETACH_TIMEOUT = 5.0
#: how long a rollback waits for a half-attached device to go
_ROLLBACK_UNPLUG_TIMEOUT = 5.0

Device = InterfaceDef | HostdevDef


class DetachResult(enum.StrEnum):
    """How a detach ended: the device is gone, or QEMU is still waiting for the guest."""

    DETACHED = "detached"
    PENDING = "pending"


# -- attach --------------------------------------------------------------------------------
async def attach(
    rt: DomainRuntime, device: str | Device, *, source: str | None = None
) -> LiveInterface | LiveHostdev:
    """Hot-plug an ``<interface>`` or ``<hostdev>`` (XML text or definition) as one job.

    Returns the device as the live XML shows it. ``source`` names the document in errors.
    """
    defn = parse_device(device, source=source) if isinstance(device, str) else device
    async with rt.job("attach", defn.alias):
        found = review_device(defn, rt.live, live=True, source=source)
        if found.errors:
            raise found.errors[0]
        for warning in found.warnings:  # what libvirt accepts but qctl doubts
            log.warning("domain %s: %s", rt.name, warning)
        if isinstance(defn, HostdevDef) or defn.type is InterfaceType.HOSTDEV:
            live = await _attach_vfio(rt, defn)
        elif (network := _hostdev_pool(rt, defn)) is not None:
            live = await _attach_from_pool(rt, defn, network)
        else:
            live = await _attach_interface(rt, defn)
    attached = as_live(live)
    rt.publish(DeviceAdded(None, attached.alias))
    return attached


def _hostdev_pool(rt: DomainRuntime, defn: InterfaceDef) -> NetworkDef | None:
    """The hostdev pool a ``type='network'`` interface draws from, if it names one."""
    if defn.type is not InterfaceType.NETWORK or not defn.source or not defn.source.network:
        return None
    network = rt.networks.get(defn.source.network)
    forward = network.forward
    return network if forward is not None and forward.mode is ForwardMode.HOSTDEV else None


def _with_mac(domain: DomainDef, iface: InterfaceDef) -> InterfaceDef:
    if iface.mac is not None:
        return iface
    taken = {i.mac for i in domain.interfaces}
    mac = random_mac()
    while mac in taken:
        mac = random_mac()
    return dataclasses.replace(iface, mac=mac)


def _placed(rt: DomainRuntime, device: Device) -> Device:
    """``device`` with a free alias and a guest address; the job is named after it."""
    named = alias_for(rt.live, device)
    _, placed = place_device(rt.live, named, may_add_port=False)
    assert placed.alias is not None
    rt.name_job(placed.alias)
    return placed


class _Outcome:
    """Whether QEMU refused a command (then it created nothing, and there is nothing to
    undo) or its fate is unknown or done (then its undo runs)."""

    def __init__(self) -> None:
        self.refused = False

    async def run(self, command: Awaitable[None]) -> None:
        """Await ``command``, noting a refusal."""
        try:
            await command
        except QMPCommandError:
            self.refused = True
            raise


def _undo(
    rt: DomainRuntime,
    alias: str,
    undo: Callable[[], Awaitable[object]],
    outcome: _Outcome | None = None,
) -> Callable[[], Awaitable[None]]:
    """An undo step of ``alias``'s attach: skipped when the entry is ``uncertain`` (an
    earlier undo could not finish) or the command it undoes was refused; when it fails or
    is cancelled, the entry becomes ``uncertain`` (and the later undos are skipped)."""

    async def step() -> None:
        if outcome is not None and outcome.refused:
            return
        entry = rt.ledger.get(alias)
        if entry is not None and entry.state is EntryState.UNCERTAIN:
            log.warning("domain %s: %s may be in QEMU still; resources kept", rt.name, alias)
            return
        try:
            await undo()
        except BaseException:
            await to_the_end(_mark_uncertain(rt, alias))
            raise

    return step


async def _unless_refused(outcome: _Outcome, undo: Callable[[], Awaitable[None]]) -> None:
    if not outcome.refused:
        await undo()


async def _mark_uncertain(rt: DomainRuntime, alias: str) -> None:
    entry = rt.ledger.get(alias)
    if entry is not None and entry.state is not EntryState.UNCERTAIN:
        await rt.record(entry.evolve(state=EntryState.UNCERTAIN))


async def _release_and_forget(rt: DomainRuntime, alias: str) -> None:
    entry = rt.ledger.get(alias)
    if entry is not None:
        await rt.release_host_resources(entry)
        await rt.forget(alias)


async def _attach_interface(rt: DomainRuntime, iface: InterfaceDef) -> InterfaceDef:
    """Hot-plug one interface (see the module's first table)."""
    caps = await rt.capabilities()
    check_interface_support(iface, caps)
    placed = _placed(rt, _with_mac(rt.live, iface))
    assert isinstance(placed, InterfaceDef) and placed.alias is not None
    alias = placed.alias
    bridge_of(placed, rt.networks.get)  # an unknown network is the request's fault
    stack = contextlib.AsyncExitStack()
    stage = "tap"
    try:
        host = contextlib.AsyncExitStack()
        try:
            # The tap is not persistent (it dies with the last fd), so a crash before the
            # intent is written leaks nothing; from then on the ledger names every fd and
            # netdev QEMU may hold, and the ledger's release deletes the tap.
            live, nic = await prepare_interface(
                placed,
                host,
                netlink=await rt.netlink(),
                networks=rt.networks.get,
                accel_is_kvm=rt.accel_is_kvm,
                tun_path=rt.host_paths.tun,
                vhost_path=rt.host_paths.vhost_net,
            )
            tap_names = [f"{alias}-tap{q}" for q in range(len(nic.tap_fds))]
            vhost_names = [f"{alias}-vhost{q}" for q in range(len(nic.vhost_fds))]
            entry = LedgerEntry(
                alias=alias,
                kind=DeviceKind.INTERFACE,
                state=EntryState.ATTACHING,
                netdev_id=netdev_id(alias),
                tap=nic.tap_name,
                tap_index=nic.tap_index,
                fd_names=(*tap_names, *vhost_names),
                guest_address=str(placed.address) if placed.address else None,
                device_xml=format_xml(live),
                asked_xml=format_xml(iface),
            )
            await rt.record(entry)
        except BaseException as exc:
            await unwind(host, exc, stage)
            raise
        host.pop_all()
        stack.callback(nic.release_fds)  # ours, whatever happens; QEMU has its own copies
        stack.push_async_callback(_undo(rt, alias, lambda: _release_and_forget(rt, alias)))

        stage = "getfd"
        passed = contextlib.AsyncExitStack()  # closefd each: until netdev_add takes them
        stack.push_async_callback(_undo(rt, alias, passed.aclose))
        for name, fd in zip([*tap_names, *vhost_names], nic.fds, strict=True):
            sent = _Outcome()
            passed.push_async_callback(_unless_refused, sent, functools.partial(_closefd, rt, name))
            await sent.run(rt.monitor.send_fd(name, fd))

        stage = "netdev_add"
        added = _Outcome()
        undo_netdev = _undo(rt, alias, lambda: _netdev_del(rt, netdev_id(alias)), added)
        stack.push_async_callback(undo_netdev)
        resources = NICResources(tap_fds=tuple(tap_names), vhost_fds=tuple(vhost_names))
        await added.run(rt.monitor.netdev_add(netdev_props(live, resources)))
        passed.pop_all()  # QEMU took the named fds over: nothing is left to close there
        nic.release_fds()  # and ours go

        stage = "device_add"
        plugged = _Outcome()
        stack.push_async_callback(_undo(rt, alias, lambda: _unplug(rt, alias), plugged))
        failover = caps.has(Capability.VIRTIO_NET_FAILOVER)
        props = interface_device_props(rt.live, live, failover=failover)
        await plugged.run(rt.monitor.device_add(props))

        stage = "set_link"
        if live.link_state is LinkState.DOWN:
            await rt.monitor.set_link(alias, False)

        rt.live = with_device(rt.live, live)
        await rt.record(entry.evolve(state=EntryState.ATTACHED, fd_names=()), durable=False)
        stack.pop_all()
    except BaseException as exc:
        await _fail(stack, exc, alias, stage)
    log.info("domain %s: attached %s", rt.name, alias)
    return live


async def _fail(
    stack: contextlib.AsyncExitStack, exc: BaseException, alias: str, stage: str
) -> NoReturn:
    """Undo the steps on ``stack`` and raise: a HotplugError naming ``alias`` and ``stage``
    with ``exc`` as its cause (cancellation and other BaseExceptions as they are, and
    errors of the books — a status file that cannot be written — as what they are)."""
    await unwind(stack, exc, stage)
    if isinstance(exc, Exception) and not isinstance(exc, StateError):
        raise HotplugError(
            f"attaching {alias} failed at {stage}: {exc}", alias=alias, stage=stage
        ) from exc
    raise exc


async def _closefd(rt: DomainRuntime, name: str) -> None:
    with contextlib.suppress(QMPCommandError):
        await rt.monitor.close_fd(name)


async def _netdev_del(rt: DomainRuntime, netdev: str) -> None:
    try:
        await rt.monitor.netdev_del(netdev)
    except QMPCommandError as exc:
        if not is_not_found(exc):
            raise


def _unplug_of(alias: str) -> Callable[[DomainEvent], bool]:
    def match(event: DomainEvent) -> bool:
        return isinstance(event, DeviceRemoved | UnplugRejected) and event.alias == alias

    return match


async def _unplug(rt: DomainRuntime, alias: str) -> None:
    """Undo a ``device_add`` whose outcome may be unknown (cancelled, or a later step failed).

    Only a removal QEMU confirms counts: the device not listed, or its DEVICE_DELETED within
    the rollback's wait. Anything else — the listing failing, the guest silent or refusing
    — raises, which leaves the entry ``uncertain`` with everything it holds.
    """
    if alias not in await rt.monitor.peripherals():
        return
    with rt.hub.expect(_unplug_of(alias), claim=True) as removed:
        await rt.monitor.device_del(alias)
        async with asyncio.timeout(_ROLLBACK_UNPLUG_TIMEOUT):
            await removed
        event = removed.take()
    if not isinstance(event, DeviceRemoved):
        raise HotplugError(f"the guest refused to release {alias}", alias=alias)


async def _attach_vfio(
    rt: DomainRuntime,
    device: Device,
    *,
    pool: tuple[str, str] | None = None,
    asked: Device | None = None,
) -> Device:
    """Hot-plug a PCI host device with VFIO (see the module's second table).

    ``pool`` is the network pool allocation the device came from: it is returned here if
    the attach fails before the intent (which then owns it) is written; ``asked`` is then
    the interface as requested, before the pool's VF replaced its source.
    """
    caps = await rt.capabilities()
    stack = contextlib.AsyncExitStack()
    alias = device.alias or "hostdev"
    stage = "validate"
    hold = _PoolHold(rt, pool, alias)
    stack.push_async_callback(hold.give_back)
    try:
        if isinstance(device, InterfaceDef):
            check_interface_support(device, caps)
            device = _with_mac(rt.live, device)
        elif not caps.has(Capability.VFIO_PCI):
            raise UnsupportedError("this QEMU has no vfio-pci device", capability="vfio_pci")
        placed = _placed(rt, device)
        assert placed.alias is not None
        alias = placed.alias
        vfio = VFIODevice.of(placed)
        entry = LedgerEntry(
            alias=alias,
            kind=device_kind(placed),
            state=EntryState.ATTACHING,
            pool=pool,
            guest_address=str(placed.address) if placed.address else None,
            host_device=str(vfio.address),
            device_xml=format_xml(placed),
            asked_xml=format_xml(asked if asked is not None else device),
        )

        async def note(**changes: object) -> None:
            nonlocal entry
            entry = entry.evolve(**changes)
            await rt.record(entry)

        stage = "host"
        # Check what the other domains hold and record this claim under the state root's
        # devices lock, so no other domain can take the device between the two.
        async with devices_lock(rt.root):
            in_use = rt.devices_in_use()  # before this device's own entry joins the ledger
            if vfio.address not in in_use:  # else prepare_vfio refuses it, naming the holder
                claim_devices(rt.root, {vfio.address: f"{rt.name}/{alias}"})
            await rt.record(entry)
            hold.recorded = True
        stack.push_async_callback(_undo(rt, alias, lambda: _release_and_forget(rt, alias)))
        # The ledger holds the saved VF settings and the original driver before they
        # change; its release undoes them, so the steps' own undos are not kept.
        async with contextlib.AsyncExitStack() as ledger_owns:
            await prepare_vfio(
                vfio,
                ledger_owns,
                netlink=await rt.netlink(),
                sysfs=rt.host_paths.sysfs,
                in_use=in_use,
                note=note,
            )
            ledger_owns.pop_all()
        _hand_group(rt, caps, vfio)  # QEMU, confined, opens /dev/vfio/N; release hands it back

        stage = "device_add"
        plugged = _Outcome()
        stack.push_async_callback(_undo(rt, alias, lambda: _unplug(rt, alias), plugged))
        if isinstance(placed, InterfaceDef):
            failover = caps.has(Capability.VIRTIO_NET_FAILOVER)
            props = interface_device_props(rt.live, placed, failover=failover)
        else:
            props = hostdev_props(rt.live, placed)
        await plugged.run(rt.monitor.device_add(props))
        rt.live = with_device(rt.live, placed)
        await rt.record(entry.evolve(state=EntryState.ATTACHED), durable=False)
        stack.pop_all()
    except BaseException as exc:
        await _fail(stack, exc, alias, stage)
    log.info("domain %s: attached %s (%s)", rt.name, alias, vfio.address)
    return placed


def _hand_group(rt: DomainRuntime, caps: QEMUCaps, vfio: VFIODevice) -> None:
    """Give the device's VFIO group to the user a confined QEMU runs as."""
    paths = rt.host_paths
    confinement = confinement_for(caps, confine=paths.confine, user=paths.qemu_user)
    group = PCIDevice(vfio.address, sysfs=paths.sysfs).iommu_group()
    if confinement is None or group is None:
        return
    with contextlib.ExitStack() as ledger_owns:  # the ledger's release hands it back
        hand_vfio_group(group, confinement, ledger_owns, vfio_dir=paths.vfio_dir)
        ledger_owns.pop_all()


class _PoolHold:
    """A pool allocation until a ledger entry holds it (whose release then returns it)."""

    def __init__(self, rt: DomainRuntime, pool: tuple[str, str] | None, alias: str) -> None:
        self._rt = rt
        self._pool = pool
        self._alias = alias
        self.recorded = False

    async def give_back(self) -> None:
        """Return the allocation, unless there is none or the ledger has it."""
        if self._pool is not None and not self.recorded:
            network, device = self._pool
            rt = self._rt
            await rt.networks.release(network, device, domain=rt.name, alias=self._alias)


async def _attach_from_pool(rt: DomainRuntime, iface: InterfaceDef, network: NetworkDef) -> Device:
    """A ``type='network'`` interface on a hostdev pool: one of its VFs, with VFIO.

    The live XML shows the interface as ``type='hostdev'`` on the allocated VF; the
    ledger remembers the pool, so releasing the device returns the VF to it.
    """
    assert network.forward is not None
    named = alias_for(rt.live, iface)
    assert isinstance(named, InterfaceDef) and named.alias is not None
    device = await rt.networks.allocate(network.name, rt.name, named.alias)
    try:
        actual = pool_interface(named, network, device)
    except BaseException:
        await asyncio.shield(
            rt.networks.release(network.name, device, domain=rt.name, alias=named.alias)
        )
        raise
    return await _attach_vfio(rt, actual, pool=(network.name, device), asked=iface)


# -- detach --------------------------------------------------------------------------------
async def detach(
    rt: DomainRuntime, device: str | Device, *, wait: float = DEFAULT_DETACH_TIMEOUT
) -> DetachResult:
    """Unplug a device named by alias, XML text or definition (see the module's table).

    Waits up to ``wait`` seconds for QEMU's DEVICE_DELETED. Then the device is gone and
    everything it held released (``DETACHED``), or it stays ``detaching`` (``PENDING``)
    and the event finishes the job whenever it comes. :class:`HotplugError` when the guest
    refuses the unplug (the device stays).
    """
    with contextlib.ExitStack() as scope:
        async with rt.job("detach"):
            entry = find_entry(rt, device)
            alias = entry.alias
            rt.name_job(alias)
            await rt.record(entry.evolve(state=EntryState.DETACHING))
            removed = scope.enter_context(rt.hub.expect(_unplug_of(alias), claim=True))
            try:
                await rt.monitor.device_del(alias)
            except QMPCommandError as exc:
                if is_not_found(exc):
                    await device_removed(rt, rt.ledger.get(alias) or entry)
                    return DetachResult.DETACHED
                if not is_unplug_in_progress(exc):  # in progress: an earlier request's wait
                    await rt.record(entry)
                    raise HotplugError(
                        f"detaching {alias} failed: {exc}", alias=alias, stage="device_del"
                    ) from exc
            # Cancelled with device_del in flight: the entry stays ``detaching``; its
            # event, or the next reconciliation (which asks QEMU again), settles it.
        pending = wait <= 0 and not removed.future.done()  # no timer set only to expire
        try:
            if not pending:
                async with asyncio.timeout(wait):
                    await removed
        except TimeoutError:
            pending = not removed.future.done()
        except StateError:
            if rt.released:  # QEMU is gone, and with it the device and what it held
                return DetachResult.DETACHED
            raise
        if pending:
            log.info("domain %s: detach of %s pending", rt.name, alias)
            return DetachResult.PENDING
        event = removed.take()
    if rt.released:
        return DetachResult.DETACHED
    async with rt.job("detach", alias):
        current = rt.ledger.get(alias)
        if isinstance(event, DeviceRemoved):
            if current is not None:
                await device_removed(rt, current)
            return DetachResult.DETACHED
        if current is not None:
            await rt.record(current.evolve(state=EntryState.ATTACHED))
    raise HotplugError(f"unplug of {alias} rejected by the guest", alias=alias, stage="device_del")


def find_entry(rt: DomainRuntime, device: str | Device) -> LedgerEntry:
    """The ledger entry a request names (alias, XML text, MAC, or host address)."""
    if isinstance(device, str):
        if not device.lstrip().startswith("<"):
            entry = rt.ledger.get(device)
            if entry is None:
                raise HotplugError(f"no device with alias {device!r}", alias=device)
            return entry
        device = parse_device(device, source="<detach-device>")
    if device.alias and (entry := rt.ledger.get(device.alias)) is not None:
        return entry
    if isinstance(device, InterfaceDef) and device.mac:
        for live in rt.live.interfaces:
            if live.mac == device.mac and (found := rt.ledger.get(live.alias or "")):
                return found
    if isinstance(device, HostdevDef):
        for entry in rt.ledger:
            if entry.host_device == str(device.source):
                return entry
    raise HotplugError("no attached device matches the definition given")


async def device_removed(rt: DomainRuntime, entry: LedgerEntry) -> None:
    """Finish the books of a device QEMU no longer has: free every host resource it held.

    Safe to call more than once and after a crash: each release tolerates "already gone".
    """
    if entry.netdev_id is not None and entry.kind is DeviceKind.INTERFACE:
        await _netdev_del(rt, entry.netdev_id)
    for name in entry.fd_names:
        await _closefd(rt, name)
    await rt.release_host_resources(entry)
    rt.live = without_device(rt.live, entry.alias)
    await rt.forget(entry.alias)
    log.info("domain %s: %s removed", rt.name, entry.alias)


# -- late events ---------------------------------------------------------------------------
def on_unclaimed(rt: DomainRuntime, event: DomainEvent) -> None:
    """The hub's fallback: a removal or refusal nobody waits for is acted on in a job."""
    if isinstance(event, DeviceRemoved) and event.alias in rt.ledger:
        rt.spawn(_finish_late(rt, event.alias), f"{rt}: {event.alias} removed")
    elif isinstance(event, UnplugRejected) and event.alias in rt.ledger:
        rt.spawn(_unrefuse(rt, event.alias), f"{rt}: {event.alias} refused")


async def _finish_late(rt: DomainRuntime, alias: str) -> None:
    async with rt.job("detach", alias):
        entry = rt.ledger.get(alias)
        if entry is not None:
            await device_removed(rt, entry)


async def _unrefuse(rt: DomainRuntime, alias: str) -> None:
    async with rt.job("detach", alias):
        entry = rt.ledger.get(alias)
        if entry is not None and entry.state is EntryState.DETACHING:
            await rt.record(entry.evolve(state=EntryState.ATTACHED))


# -- reconcile -----------------------------------------------------------------------------
async def reconcile(rt: DomainRuntime) -> bool:
    """Compare the books with QEMU and finish or undo whatever was half done (module doc).

    Only when no other job runs (its owner keeps the books meanwhile); returns whether it
    ran. Asks QEMU for its devices only when the books have something to check.
    """
    async with rt.lock.held_if_free() as free:
        if not free:
            return False
        rt.refresh()
        stale_job = rt.job_record is not None  # its owner died: nothing holds the lock
        rt.job_record = None
        state = from_status(await rt.monitor.status())
        changed = stale_job or state is not rt.state
        rt.set_state(state)
        if rt.ledger.pending():
            present = await rt.monitor.peripherals()
            for entry in list(rt.ledger):
                await _settle(rt, entry, present)
        for held in stray_allocations(rt.networks, rt.name, rt.ledger):
            await rt.networks.release(
                held.network, held.device, domain=held.domain, alias=held.alias
            )
        if changed:
            await rt.save()
    return True


def _unassigned(entry: LedgerEntry) -> bool:
    """A hostdev held for the domain but never given to the guest: QEMU never has it."""
    return entry.kind is DeviceKind.HOSTDEV and "type=\"unassigned\"" in (entry.device_xml or "")


def _failover_primary(rt: DomainRuntime, alias: str) -> bool:
    """A transient failover half: QEMU hides it until the guest negotiates failover (and
    unplugs it itself around a migration), so its absence proves nothing."""
    devices: list[Device] = [*rt.live.interfaces, *rt.live.hostdevs]
    return any(
        d.alias == alias and d.teaming is not None and d.teaming.type is TeamingType.TRANSIENT
        for d in devices
    )


async def _settle(rt: DomainRuntime, entry: LedgerEntry, present: set[str]) -> None:
    if _unassigned(entry) or (entry.alias not in present and _failover_primary(rt, entry.alias)):
        return
    if entry.alias not in present:
        await device_removed(rt, entry)  # never attached, or removed while nobody watched
    elif entry.state in (EntryState.ATTACHING, EntryState.UNCERTAIN):
        await _adopt(rt, entry)
    elif entry.state is EntryState.DETACHING:
        try:
            await rt.monitor.device_del(entry.alias)
        except QMPCommandError as exc:
            if is_not_found(exc):  # the guest let go since QEMU listed its devices
                await device_removed(rt, entry)
            elif not is_unplug_in_progress(exc):  # the first request never reached QEMU
                await rt.record(entry.evolve(state=EntryState.ATTACHED))


async def _adopt(rt: DomainRuntime, entry: LedgerEntry) -> None:
    """An attach QEMU completed but whose controller died: put it in the live XML."""
    aliases = {i.alias for i in rt.live.interfaces} | {h.alias for h in rt.live.hostdevs}
    if entry.device_xml and entry.alias not in aliases:
        rt.live = with_device(rt.live, parse_device(entry.device_xml, live=True))
    await rt.record(entry.evolve(state=EntryState.ATTACHED))


def device_kind(device: Device) -> DeviceKind:
    """The ledger kind of a device definition."""
    if isinstance(device, HostdevDef):
        return DeviceKind.HOSTDEV
    if device.type is InterfaceType.HOSTDEV:
        return DeviceKind.HOSTDEV_INTERFACE
    return DeviceKind.INTERFACE
