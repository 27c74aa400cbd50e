"""Hot-plug and unplug as transactions, with the ledger telling the truth at every step.

Attach (an interface):

    tap         tap on its bridge, vhost-net fds (see :mod:`qctl.qemu.prepare`); then the
                ledger entry ``attaching`` (alias, address, tap, the fd names to pass)
    getfd       each fd passed to QEMU by name
    netdev_add  QEMU takes the named fds over
    device_add
    set_link    down, when ``<link state='down'/>``
    commit      the live XML gains the device, the entry becomes ``attached``

The request is validated against the domain and the capabilities first, and those errors
are raised as they are. Then each step pushes its undo on an ``AsyncExitStack``; a failure
(or cancellation) unwinds exactly the steps done, shielded from cancellation, and the
caller sees a :class:`~qctl.errors.HotplugError` naming the device and the stage, with the
original error as its cause. If QEMU dies meanwhile, the domain's exit watcher releases
what the ledger holds.

Detach: ``device_del`` → DEVICE_DELETED → ``netdev_del`` → tap deleted → pool entry and VF
config returned. The wait for the event holds no lock, so other devices and commands go on;
when it times out the device stays in the live XML as ``detaching`` and the event, whenever
it comes, finishes the job (see :meth:`Domain._on_qemu_event`). "Device not found" from QEMU
means already gone: the books are finished. The guest refusing the unplug puts the device
back to ``attached``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, NoReturn

from qctl.caps import Capability
from qctl.conf import (
    DomainDef,
    HostdevDef,
    InterfaceDef,
    InterfaceType,
    LinkState,
    format_xml,
)
from qctl.errors import HotplugError, QMPCommandError, UnsupportedError
from qctl.qemu.devices import with_device, without_device
from qctl.qemu.events import DeviceRemoved
from qctl.qemu.ledger import DeviceKind, EntryState, LedgerEntry
from qctl.qemu.monitor import is_not_found
from qctl.qemu.nic import NICResources, hostdev_props, interface_device_props, netdev_props
from qctl.qemu.placement import alias_for, netdev_id, place_device
from qctl.qemu.plan import check_interface_support, random_mac
from qctl.qemu.prepare import bridge_of, prepare_interface
from qctl.qemu.startup import take_devices_lock, unwind
from qctl.qemu.vfio import VFIODevice, prepare_vfio

if TYPE_CHECKING:
    from qctl.qemu.domain import Domain

__all__ = [
    "DEFAULT_DETACH_TIMEOUT",
    "DetachResult",
    "attach_interface",
    "attach_vfio",
    "device_kind",
    "device_removed",
]

log = logging.getLogger(__name__)

#: how long :meth:`Domain.detach_device` waits for DEVICE_DELETED before saying "pending"
DEFAULT_DETACH_TIMEOUT = 5.0
#: how long a rollback waits for a half-attached device to go
_ROLLBACK_UNPLUG_TIMEOUT = 5.0


class DetachResult(enum.StrEnum):
    """How a detach ended: the device is gone, or QEMU is still waiting for the guest."""

    DETACHED = "detached"
    PENDING = "pending"


def _with_mac(domain: DomainDef, iface: InterfaceDef) -> InterfaceDef:
    if iface.mac is not None:
        return iface
    taken = {i.mac for i in domain.interfaces}
    mac = random_mac()
    while mac in taken:
        mac = random_mac()
    return dataclasses.replace(iface, mac=mac)


async def attach_interface(dom: Domain, iface: InterfaceDef) -> InterfaceDef:
    """Hot-plug one interface into ``dom``; returns it as the live XML shows it.

    The caller holds the domain's job lock and has validated ``iface`` against the domain.
    """
    caps = await dom.capabilities()
    check_interface_support(iface, caps)
    iface = _with_mac(dom.live, iface)
    placed = alias_for(dom.live, iface)
    _, placed = place_device(dom.live, placed, may_add_port=False)
    assert isinstance(placed, InterfaceDef) and placed.alias is not None
    alias = placed.alias
    bridge_of(placed, dom.networks.get)  # an unknown network is the request's fault
    stack = contextlib.AsyncExitStack()
    host = contextlib.AsyncExitStack()
    stack.push_async_callback(_unless_uncertain, dom, alias, host.aclose)
    stage = "tap"
    try:
        # The tap is not persistent (it dies with the last fd), so a crash before the
        # first ledger write leaks nothing; from then on the ledger names every fd and
        # netdev QEMU may hold, and reconciliation can undo them.
        live, nic = await prepare_interface(
            placed,
            host,
            netlink=await dom.netlink(),
            networks=dom.networks.get,
            accel_is_kvm=dom.accel_is_kvm,
            tun_path=dom.host_paths.tun,
            vhost_path=dom.host_paths.vhost_net,
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
        )
        dom.record(entry)
        stack.push_async_callback(_unless_uncertain, dom, alias, _forgetting(dom, alias))

        stage = "getfd"
        fd_stack = contextlib.AsyncExitStack()
        # Each undo goes on before its command is sent: a caller cancelled while the
        # command is in flight cannot know whether QEMU ran it (the undos tolerate "not found").
        try:
            for name, fd in zip([*tap_names, *vhost_names], nic.fds, strict=True):
                fd_stack.push_async_callback(_close_fd_quietly, dom, name)
                await dom.monitor.send_fd(name, fd)

            stage = "netdev_add"
            stack.push_async_callback(
                _unless_uncertain, dom, alias, lambda: _netdev_del_quietly(dom, netdev_id(alias))
            )
            props = netdev_props(
                live, NICResources(tap_fds=tuple(tap_names), vhost_fds=tuple(vhost_names))
            )
            await dom.monitor.netdev_add(props)
        except BaseException as exc:
            await unwind(fd_stack, exc, stage)
            raise
        # netdev_add took the named fds over: nothing is left to close in QEMU, and ours go.
        fd_stack.pop_all()
        nic.release_fds()

        stage = "device_add"
        stack.push_async_callback(_unplug_half_attached, dom, alias)
        props = interface_device_props(dom.live, live, failover=dom.features.failover)
        await dom.monitor.device_add(props)

        stage = "set_link"
        if live.link_state is LinkState.DOWN:
            await dom.monitor.set_link(alias, False)

        dom.live = with_device(dom.live, live)
        dom.record(entry.evolve(state=EntryState.ATTACHED, fd_names=()))
        stack.pop_all()
    except BaseException as exc:
        await _fail(stack, exc, alias, stage)
    log.info("domain %s: attached %s", dom.name, alias)
    return live


async def _fail(
    stack: contextlib.AsyncExitStack, exc: BaseException, alias: str, stage: str
) -> NoReturn:
    """Undo the steps on ``stack`` and raise: a HotplugError naming ``alias`` and ``stage``
    with ``exc`` as its cause (cancellation and other BaseExceptions as they are)."""
    await unwind(stack, exc, stage)
    if isinstance(exc, Exception):
        raise HotplugError(
            f"attaching {alias} failed at {stage}: {exc}", alias=alias, stage=stage
        ) from exc
    raise exc


async def _close_fd_quietly(dom: Domain, name: str) -> None:
    with contextlib.suppress(QMPCommandError):
        await dom.monitor.close_fd(name)


async def _netdev_del_quietly(dom: Domain, netdev: str) -> None:
    try:
        await dom.monitor.netdev_del(netdev)
    except QMPCommandError as exc:
        if not is_not_found(exc):
            raise


async def _unplug_half_attached(dom: Domain, alias: str) -> None:
    """Undo a ``device_add`` whose outcome may be unknown (cancelled, or set_link failed).

    When QEMU's removal cannot be confirmed (the guest does not answer in time, or QMP
    fails), the device may still be in the guest: its entry becomes ``uncertain`` and keeps
    every resource (the undos below this one leave them), until its DEVICE_DELETED or the
    next reconciliation finishes it.
    """
    if alias not in await dom.monitor.peripherals():
        return
    removed = dom.expect_unplug(alias)
    handled = False
    try:
        await dom.monitor.device_del(alias)
        async with asyncio.timeout(_ROLLBACK_UNPLUG_TIMEOUT):
            event = await asyncio.shield(removed)
        handled = True
        if not isinstance(event, DeviceRemoved):
            raise HotplugError(f"the guest refused to release {alias}", alias=alias)
    except BaseException:
        entry = dom.ledger.get(alias)
        if entry is not None:
            dom.record(entry.evolve(state=EntryState.UNCERTAIN))
        raise
    finally:
        dom.stop_expecting(alias, removed, handled=handled)


async def _unless_uncertain(dom: Domain, alias: str, undo: Callable[[], Awaitable[object]]) -> None:
    """Run ``undo`` unless the device may still be in the guest (entry ``uncertain``)."""
    entry = dom.ledger.get(alias)
    if entry is not None and entry.state is EntryState.UNCERTAIN:
        log.warning(
            "domain %s: %s may still be in the guest; its resources are kept", dom.name, alias
        )
        return
    await undo()


def _forgetting(dom: Domain, alias: str) -> Callable[[], Awaitable[None]]:
    async def forget() -> None:
        dom.forget(alias)

    return forget


async def attach_vfio(
    dom: Domain, device: InterfaceDef | HostdevDef, *, pool: tuple[str, str] | None = None
) -> InterfaceDef | HostdevDef:
    """Hot-plug a PCI host device (a ``<hostdev>`` or a hostdev interface) with VFIO.

    The caller holds the job lock and has validated the device. ``pool`` is the network
    pool allocation the device came from, returned with the device.
    """
    caps = await dom.capabilities()
    if isinstance(device, InterfaceDef):
        check_interface_support(device, caps)
        device = _with_mac(dom.live, device)
    elif not caps.has(Capability.VFIO_PCI):
        raise UnsupportedError("this QEMU has no vfio-pci device", capability="vfio_pci")
    placed = alias_for(dom.live, device)
    _, placed = place_device(dom.live, placed, may_add_port=False)
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
    )
    stack = contextlib.AsyncExitStack()
    stage = "host"

    def note(**changes: object) -> None:
        nonlocal entry
        entry = entry.evolve(**changes)
        dom.record(entry)

    try:
        # Check what other domains hold and record this claim under the state root's
        # devices lock, so no other domain can take the device between the two.
        devices_lock = await take_devices_lock(dom.state_root)
        try:
            in_use = dom.devices_in_use()  # before this device's own entry joins the ledger
            dom.record(entry)
        finally:
            devices_lock.release()
        stack.push_async_callback(_unless_uncertain, dom, alias, _forgetting(dom, alias))
        host = contextlib.AsyncExitStack()
        stack.push_async_callback(_unless_uncertain, dom, alias, host.aclose)
        await prepare_vfio(
            vfio,
            host,
            netlink=await dom.netlink(),
            sysfs=dom.host_paths.sysfs,
            in_use=in_use,
            note=note,
        )
        stage = "device_add"
        stack.push_async_callback(_unplug_half_attached, dom, alias)
        if isinstance(placed, InterfaceDef):
            props = interface_device_props(dom.live, placed, failover=dom.features.failover)
        else:
            props = hostdev_props(dom.live, placed)
        await dom.monitor.device_add(props)
        dom.live = with_device(dom.live, placed)
        dom.record(entry.evolve(state=EntryState.ATTACHED))
        stack.pop_all()
    except BaseException as exc:
        await _fail(stack, exc, alias, stage)
    log.info("domain %s: attached %s (%s)", dom.name, alias, vfio.address)
    return placed


async def device_removed(dom: Domain, entry: LedgerEntry) -> None:
    """Finish the books of a device QEMU no longer has: free every host resource it held.

    Safe to call more than once and after a crash: each release tolerates "already gone".
    """
    if entry.netdev_id is not None and entry.kind is DeviceKind.INTERFACE:
        await _netdev_del_quietly(dom, entry.netdev_id)
    for name in entry.fd_names:
        await _close_fd_quietly(dom, name)
    await dom.release_host_resources(entry)
    dom.live = without_device(dom.live, entry.alias)
    dom.forget(entry.alias)
    log.info("domain %s: %s removed", dom.name, entry.alias)


def device_kind(device: InterfaceDef | HostdevDef) -> DeviceKind:
    """The ledger kind of a device definition."""
    if isinstance(device, HostdevDef):
        return DeviceKind.HOSTDEV
    if device.type is InterfaceType.HOSTDEV:
        return DeviceKind.HOSTDEV_INTERFACE
    return DeviceKind.INTERFACE
