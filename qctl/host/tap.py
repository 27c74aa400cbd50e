"""Tap devices for guest NICs: create, configure, hand over, delete.

A tap is created through ``/dev/net/tun`` (``TUNSETIFF``) and is **not persistent**: the kernel
keeps it while at least one of its queue fds is open and removes it when the last one closes.
Once QEMU holds the fds, the tap lives and dies with QEMU, even if QEMU crashes and nobody is
left to clean up; and undoing a half-done preparation is just closing our fds.

:func:`create_tap` does what libvirt does for ``<interface type='bridge'>`` (and ``network``
with a bridge forward mode), in libvirt's order and each step undone if a later one fails:

1. open ``/dev/net/tun`` once per queue and attach each fd to the same tap with ``IFF_TAP |
   IFF_NO_PI``, plus ``IFF_VNET_HDR`` when asked (virtio, e1000e, …) and ``IFF_MULTI_QUEUE``
   for more than one queue. The first attach also sets ``IFF_TUN_EXCL``, so an interface that
   already has the requested name is refused (``ResourceBusyError``) instead of joined. Without
   a name the kernel allocates the lowest free ``vnetN`` from the template ``vnet%d``
   atomically, so parallel controllers never race for a name. (libvirt keeps its own counter
   so that a freed name is not reused at once; we accept the kernel's reuse, since the ledger
   records the ifindex too and cleanup by ifindex never hits a newcomer with the old name.)
2. set the tap's MAC: the guest's MAC with the first byte ``0xFE`` (``0xFA`` if the guest's
   already is ``0xFE``), so the tap never carries the guest's own address and a Linux bridge,
   which takes the lowest port MAC as its own, is discouraged from taking the tap's;
3. set the MTU: the requested one, or else the bridge's, so enslaving the tap does not lower
   the bridge's MTU;
4. enslave it to the bridge, if any;
5. bring it up.

The fds are opened close-on-exec: the caller decides which process gets them (``pass_fds``
when spawning QEMU, ``SCM_RIGHTS`` for hotplug) and then closes its copies with
:meth:`Tap.close_fds`.
"""

from __future__ import annotations

import errno as errno_mod
import fcntl
import logging
import os
import socket
import struct
from collections.abc import Generator
from types import TracebackType
from typing import Any

from qctl.record import record

from ..errors import HostError, NetlinkError, ResourceBusyError, UnsupportedError, add_rollback_note
from ..types import IfName, MACAddress
from .ifioctl import if_driver, if_index, if_mtu
from .link import LinkControl, netlink_error
from .oserror import errno_text

__all__ = [
    "TUN_PATH",
    "PendingTap",
    "Tap",
    "TapRequest",
    "create_tap",
    "delete_tap",
    "tap_mac",
]

log = logging.getLogger(__name__)

TUN_PATH = "/dev/net/tun"
"""The tun/tap clone device."""

# From <linux/if_tun.h>: _IOW('T', 202, int) and the ifreq flags.
_TUNSETIFF = 0x400454CA
_IFF_TAP = 0x0002
_IFF_NO_PI = 0x1000
_IFF_MULTI_QUEUE = 0x0100
_IFF_VNET_HDR = 0x4000
_IFF_TUN_EXCL = 0x8000
# struct ifreq: a 16-byte name, then a union whose first member here is the short flags.
_IFREQ = struct.Struct("16sH22x")
# The kernel caps the queues of one tun device at 256 (MAX_TAP_QUEUES).
_MAX_QUEUES = 256
_AUTO_NAME = "vnet%d"


def tap_mac(guest_mac: MACAddress) -> MACAddress:
    """The MAC a tap gets for a guest NIC with ``guest_mac`` (libvirt's rule).

    The first byte becomes ``0xFE``, or ``0xFA`` when the guest's MAC already starts with
    ``0xFE``: the tap must not carry the guest's own address (the kernel would log "received
    packet with own address as source address"), and a high first byte keeps a bridge from
    adopting the tap's MAC as its own.
    """
    return guest_mac.with_first_byte(0xFA if guest_mac.octets[0] == 0xFE else 0xFE)


@record
class TapRequest:
    """What :func:`create_tap` should build.

    ``name`` is the interface name (``<target dev>``), a template with one ``%d`` the kernel
    fills with the lowest free number, or ``None`` for ``vnet%d``. ``mac`` is the *guest's*
    MAC (the tap's own is derived with :func:`tap_mac`). ``mtu`` ``None`` means the bridge's
    MTU, or the kernel default without a bridge. ``queues`` above one makes a multiqueue tap
    with one fd per queue. ``vnet_hdr`` enables the virtio-net header, which QEMU uses for
    offloads with virtio-net, e1000e and vmxnet3.

    Raises :class:`ValueError` on an impossible request (bad name, queue count, MTU).
    """

    mac: MACAddress
    name: str | None = None
    mtu: int | None = None
    bridge: str | None = None
    queues: int = 1
    vnet_hdr: bool = True

    def __post_init__(self) -> None:
        if self.name is not None:
            IfName(self.name)
            if "%" in self.name and (self.name.count("%") != 1 or "%d" not in self.name):
                raise ValueError(
                    f"interface name template {self.name!r} must hold exactly one %d"
                )
        if self.bridge is not None:
            IfName(self.bridge)
        if not 1 <= self.queues <= _MAX_QUEUES:
            raise ValueError(f"a tap has 1 to {_MAX_QUEUES} queues, not {self.queues}")
        if self.mtu is not None and self.mtu <= 0:
            raise ValueError(f"MTU must be positive, not {self.mtu}")


class Tap:
    """A tap device this process created, and its queue fds while we still hold them.

    ``name`` and ``index`` identify the link (record both in the ledger: the index is what
    makes a later delete safe). ``mac`` and ``mtu`` are the tap's own values as set (``mtu`` is
    what a ``host_mtu`` for virtio-net should say); ``bridge`` is the master it was enslaved to.

    Closing: :meth:`close_fds` closes our copies of the fds once QEMU holds its own (the tap
    then lives as long as QEMU does). :meth:`aclose` (also ``async with``) closes our fds and
    deletes the link if it still exists, e.g. because QEMU still holds fds after a detach.
    Both are idempotent.
    """

    def __init__(
        self,
        *,
        name: str,
        index: int,
        fds: list[int],
        mac: MACAddress,
        mtu: int | None,
        bridge: str | None,
        vnet_hdr: bool,
        netlink: LinkControl,
    ) -> None:
        self.name = name
        self.index = index
        self.mac = mac
        self.mtu = mtu
        self.bridge = bridge
        self.vnet_hdr = vnet_hdr
        self.queues = len(fds)
        self._fds = list(fds)
        self._netlink = netlink
        self._closed = False

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"fds={self._fds}"
        return f"<Tap {self.name} index={self.index} queues={self.queues} {state}>"

    @property
    def fds(self) -> list[int]:
        """Our open queue fds, one per queue; empty once :meth:`close_fds` ran."""
        return list(self._fds)

    def close_fds(self) -> None:
        """Close our copies of the queue fds (idempotent).

        If nobody else holds a copy, the kernel removes the tap right away.
        """
        fds, self._fds = self._fds, []
        _close_all(fds)

    async def aclose(self) -> None:
        """Close our fds and delete the link if it still exists (idempotent).

        The link is deleted only if the name still belongs to the ifindex we created.
        """
        if self._closed:
            return
        self.close_fds()
        await self._netlink.delete_link(self.name, index=self.index)
        self._closed = True

    async def __aenter__(self) -> Tap:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class PendingTap:
    """A tap about to be created: what :func:`create_tap` returns.

    ``await`` it for the :class:`Tap`, or ``async with`` it to have the tap closed (fds and
    link) when the block ends. Nothing happens until one of the two.
    """

    def __init__(self, request: TapRequest, netlink: LinkControl, tun_path: str) -> None:
        self._request = request
        self._netlink = netlink
        self._tun_path = tun_path
        self._tap: Tap | None = None

    def __await__(self) -> Generator[Any, None, Tap]:
        return _create(self._request, self._netlink, self._tun_path).__await__()

    async def __aenter__(self) -> Tap:
        self._tap = await _create(self._request, self._netlink, self._tun_path)
        return self._tap

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._tap is not None:
            await self._tap.aclose()


def create_tap(
    request: TapRequest, *, netlink: LinkControl, tun_path: str = TUN_PATH
) -> PendingTap:
    """Create and configure the tap ``request`` describes (steps in the module docstring).

    Use ``tap = await create_tap(...)`` or ``async with create_tap(...) as tap:`` (the result
    is an awaitable, not a coroutine: run it as a task with ``asyncio.ensure_future``). On any
    failure, or cancellation, every step done so far is undone (our fds are closed, which
    removes the tap) and the original error is raised; a failure while undoing is attached to
    it as a note. Errors:

    - :class:`ResourceBusyError`: an interface with the requested name already exists;
    - :class:`qctl.errors.NetlinkError`: the bridge is missing (``ENODEV``, checked before
      anything is created), or a link operation failed (message names the tap and the step);
    - :class:`HostError`: the bridge is not a bridge, or the tap could not be created;
    - :class:`UnsupportedError`: ``tun_path`` does not exist (no tun driver).

    ``netlink`` must stay open as long as the returned tap, which uses it to delete the link.
    """
    return PendingTap(request, netlink, tun_path)


async def delete_tap(name: str, *, netlink: LinkControl, index: int | None = None) -> bool:
    """Delete the tap called ``name`` if it is still there, e.g. one recorded in a ledger.

    With ``index`` (the tap's ifindex, as recorded), only that very link is deleted, never a
    newer interface that took over the name; without it, only a tun/tap device is deleted.
    A tap that is gone already (QEMU exited and closed the last fd) is success: returns
    ``False``, and ``True`` when a link was deleted.
    """
    link = await netlink.get_link(name)
    if link is None:
        return False
    if link.kind != "tun" or (index is not None and link.index != index):
        log.info(
            "not deleting %s: the name now belongs to another interface (%s, index %d)",
            name,
            link.kind or "no kind",
            link.index,
        )
        return False
    return await netlink.delete_link(name, index=link.index)


async def _create(request: TapRequest, netlink: LinkControl, tun_path: str) -> Tap:
    """The body of :func:`create_tap`: one netlink round trip (the tap's whole set-up in one
    request, after the bridge is checked with ioctls), since this is on every hot-plug's
    path."""
    bridge = _require_bridge(request.bridge) if request.bridge else None
    name, fds = _open_queues(request, tun_path)
    mac = tap_mac(request.mac)
    mtu = request.mtu if request.mtu is not None else (bridge[1] if bridge else None)
    master = (bridge[0], request.bridge) if bridge and request.bridge else None
    try:
        index = _index_of(name)
        await netlink.setup_link(index, name, mac=mac, mtu=mtu, master=master)
    except BaseException as exc:
        # Closing our fds is the whole undo: nobody else holds one, so the kernel removes the
        # tap, with its MAC, MTU and bridge port, before close() returns.
        for failure in _close_all(fds):
            add_rollback_note(exc, failure, f"closing the fds of tap {name}")
        raise
    log.debug("created tap %s (index %d, %d queue(s))", name, index, len(fds))
    return Tap(
        name=name,
        index=index,
        fds=fds,
        mac=mac,
        mtu=mtu,
        bridge=request.bridge,
        vnet_hdr=request.vnet_hdr,
        netlink=netlink,
    )


def _index_of(name: str) -> int:
    """The ifindex of the tap just created (an ioctl, no netlink round trip)."""
    try:
        return socket.if_nametoindex(name)
    except OSError as exc:
        raise netlink_error(f"tap {name} vanished while being set up", exc.errno) from exc


def _require_bridge(bridge: str) -> tuple[int, int]:
    """The index and MTU of bridge ``bridge``, checked before anything is created.

    ioctls, not netlink: this runs on every hot-plug, and they cost microseconds.
    """
    try:
        index = if_index(bridge)
    except NetlinkError as exc:
        raise netlink_error(f"cannot attach a tap to bridge {bridge}", exc.errno) from exc
    driver = if_driver(bridge)
    if driver != "bridge":
        raise HostError(f"cannot attach a tap to {bridge}: it is a {driver} device, not a bridge")
    return index, if_mtu(bridge)


def _open_queues(request: TapRequest, tun_path: str) -> tuple[str, list[int]]:
    """Create the tap with one open fd per queue; returns its name and the fds."""
    name = request.name or _AUTO_NAME
    flags = _IFF_TAP | _IFF_NO_PI
    if request.vnet_hdr:
        flags |= _IFF_VNET_HDR
    if request.queues > 1:
        flags |= _IFF_MULTI_QUEUE
    fds: list[int] = []
    try:
        for queue in range(request.queues):
            fd = _open_tun(tun_path)
            fds.append(fd)
            exclusive = _IFF_TUN_EXCL if queue == 0 else 0
            name = _set_iff(fd, name, flags | exclusive, first=queue == 0)
    except BaseException as exc:
        for failure in _close_all(fds):
            add_rollback_note(exc, failure, f"closing the fds of tap {name}")
        raise
    return name, fds


def _open_tun(tun_path: str) -> int:
    """Open the tun clone device, close-on-exec."""
    try:
        return os.open(tun_path, os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        text = f"cannot open {tun_path}: {errno_text(exc.errno, exc.strerror)}"
        if exc.errno in (errno_mod.ENOENT, errno_mod.ENODEV, errno_mod.ENXIO):
            raise UnsupportedError(
                f"{text}; is the tun driver loaded?", capability="tun"
            ) from exc
        raise HostError(text) from exc


def _set_iff(fd: int, name: str, flags: int, *, first: bool) -> str:
    """Attach ``fd`` to the tap ``name`` (``TUNSETIFF``); returns the name the kernel chose."""
    try:
        reply = fcntl.ioctl(fd, _TUNSETIFF, _IFREQ.pack(name.encode(), flags))
    except OSError as exc:
        if first and exc.errno == errno_mod.EBUSY:
            raise ResourceBusyError(
                f"cannot create tap {name}: an interface with that name already exists"
            ) from exc
        raise HostError(
            f"cannot create tap {name}: {errno_text(exc.errno, exc.strerror)}"
        ) from exc
    raw_name, _ = _IFREQ.unpack(reply)
    return str(raw_name.rstrip(b"\0").decode())


def _close_all(fds: list[int]) -> list[OSError]:
    """Close every fd in ``fds``, going on past failures; returns the failures."""
    failures = []
    for fd in fds:
        try:
            os.close(fd)
        except OSError as exc:
            log.warning("closing tap fd %d failed: %s", fd, exc)
            failures.append(exc)
    return failures

