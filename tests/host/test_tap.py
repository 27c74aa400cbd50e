"""Tap creation against the real kernel: names, MAC, MTU, bridge, queues, flags, and undo.

Every test that creates something also proves it leaked nothing: no tap left behind and the
process's fd count unchanged.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import re
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from support import open_fd_count, unique

from qctl.errors import HostError, NetlinkError, ResourceBusyError, UnsupportedError
from qctl.host import Netlink, Tap, TapRequest, create_tap, delete_tap, tap_mac
from qctl.types import MACAddress

MakeBridge = Callable[..., Awaitable[str]]

GUEST_MAC = MACAddress.parse("52:54:00:ab:cd:ef")

# <linux/if_tun.h>, spelled out independently of the code under test.
TUNGETIFF = 0x800454D2
IFF_MULTI_QUEUE = 0x0100
IFF_VNET_HDR = 0x4000
IFF_TAP = 0x0002


def tun_flags(fd: int) -> tuple[str, int]:
    """(interface name, flags) the kernel reports for a tun fd."""
    raw_name, flags = struct.unpack("16sH22x", fcntl.ioctl(fd, TUNGETIFF, bytes(40)))
    return raw_name.rstrip(b"\0").decode(), flags


async def tun_links(netlink: Netlink) -> set[str]:
    """Names of every tun/tap device in this namespace."""
    return {link.name for link in await netlink.list_links() if link.kind == "tun"}


class Untouchable:
    """A LinkControl for paths that must fail before any link operation."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"unexpected link operation {name}")


class FaultyLinks:
    """Delegates to a real LinkControl, but the ``call``-th call of ``method`` fails.

    ``before_failing`` runs first (to break things behind the code's back); ``block`` makes
    the call wait forever instead of failing, to test cancellation.
    """

    def __init__(
        self,
        real: Netlink,
        method: str,
        *,
        call: int = 1,
        before_failing: Callable[[], None] | None = None,
        block: bool = False,
    ) -> None:
        self.real, self.method, self.call = real, method, call
        self.before_failing, self.block = before_failing, block
        self.seen = 0
        self.blocked = asyncio.Event()

    def __getattr__(self, name: str) -> Any:
        real = getattr(self.real, name)
        if name != self.method:
            return real

        async def faulty(*args: Any, **kwargs: Any) -> Any:
            self.seen += 1
            if self.seen != self.call:
                return await real(*args, **kwargs)
            if self.before_failing:
                self.before_failing()
            if self.block:
                self.blocked.set()
                await asyncio.Event().wait()
            raise NetlinkError(f"injected failure in {name}", errno=errno.EIO)

        return faulty


# -- pure: no kernel needed ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("guest", "tap"),
    [
        ("52:54:00:ab:cd:ef", "fe:54:00:ab:cd:ef"),
        ("00:16:3e:00:00:01", "fe:16:3e:00:00:01"),
        ("fe:54:00:ab:cd:ef", "fa:54:00:ab:cd:ef"),  # never the guest's own address
    ],
)
def test_tap_mac(guest: str, tap: str) -> None:
    assert str(tap_mac(MACAddress.parse(guest))) == tap


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"name": "a-name-that-is-too-long"}, "1 to 15 bytes"),
        ({"name": "bad/name"}, "forbidden character"),
        ({"name": "tap%d%d"}, "exactly one %d"),
        ({"name": "tap%s"}, "exactly one %d"),
        ({"bridge": ""}, "1 to 15 bytes"),
        ({"queues": 0}, "1 to 256 queues"),
        ({"queues": 257}, "1 to 256 queues"),
        ({"mtu": 0}, "MTU must be positive"),
    ],
)
def test_impossible_requests_are_refused(changes: dict[str, Any], reason: str) -> None:
    with pytest.raises(ValueError, match=re.escape(reason)):
        TapRequest(mac=GUEST_MAC, **changes)


async def test_missing_tun_device_is_unsupported(tmp_path: Path) -> None:
    before = open_fd_count()
    with pytest.raises(UnsupportedError) as info:
        await create_tap(
            TapRequest(mac=GUEST_MAC), netlink=Untouchable(), tun_path=str(tmp_path / "tun")
        )
    assert info.value.capability == "tun"
    assert "No such file or directory (ENOENT)" in str(info.value)
    assert open_fd_count() == before


async def test_tun_path_that_is_not_tun_fails_cleanly(tmp_path: Path) -> None:
    fake = tmp_path / "tun"
    fake.write_bytes(b"")
    before = open_fd_count()
    with pytest.raises(HostError, match=r"cannot create tap vnet%d: .*\(ENOTTY\)"):
        await create_tap(TapRequest(mac=GUEST_MAC), netlink=Untouchable(), tun_path=str(fake))
    assert open_fd_count() == before


# -- against the kernel ----------------------------------------------------------------------


async def test_auto_name_is_lowest_free_vnet(netlink: Netlink, tun: None) -> None:
    before = open_fd_count()
    first = await create_tap(TapRequest(mac=GUEST_MAC), netlink=netlink)
    second = await create_tap(TapRequest(mac=GUEST_MAC), netlink=netlink)
    try:
        assert re.fullmatch(r"vnet\d+", first.name)
        assert re.fullmatch(r"vnet\d+", second.name)
        assert first.name != second.name
        freed = first.name
        await first.aclose()
        async with create_tap(TapRequest(mac=GUEST_MAC), netlink=netlink) as third:
            assert third.name == freed
    finally:
        await first.aclose()
        await second.aclose()
    assert open_fd_count() == before
    assert await tun_links(netlink) == set()


async def test_given_name_and_template(netlink: Netlink, tun: None) -> None:
    name = unique("qtap")
    async with create_tap(TapRequest(mac=GUEST_MAC, name=name), netlink=netlink) as tap:
        assert tap.name == name
        link = await netlink.get_link(name)
        assert link is not None and link.kind == "tun" and link.index == tap.index
    async with create_tap(TapRequest(mac=GUEST_MAC, name="qtp%d"), netlink=netlink) as tap:
        assert re.fullmatch(r"qtp\d+", tap.name)


async def test_configured_like_libvirt(netlink: Netlink, bridge: MakeBridge, tun: None) -> None:
    br = await bridge(mtu=1400)
    before = open_fd_count()
    request = TapRequest(mac=GUEST_MAC, bridge=br)
    async with create_tap(request, netlink=netlink) as tap:
        link = await netlink.get_link(tap.name)
        assert link is not None
        assert str(link.mac) == "fe:54:00:ab:cd:ef" == str(tap.mac)
        assert link.mtu == tap.mtu == 1400  # no MTU asked: the bridge's
        assert link.master == tap.bridge == br
        assert link.up
        assert [port.name for port in await netlink.list_links(master=br)] == [tap.name]
        assert len(tap.fds) == tap.queues == 1
    assert open_fd_count() == before
    bridge_link = await netlink.get_link(br)
    assert bridge_link is not None and bridge_link.mtu == 1400
    assert await netlink.list_links(master=br) == []


async def test_explicit_mtu(netlink: Netlink, bridge: MakeBridge, tun: None) -> None:
    async with create_tap(TapRequest(mac=GUEST_MAC, mtu=1280), netlink=netlink) as tap:
        assert tap.mtu == 1280
    br = await bridge()
    request = TapRequest(mac=GUEST_MAC, mtu=9000, bridge=br)
    async with create_tap(request, netlink=netlink) as tap:
        link = await netlink.get_link(tap.name)
        assert link is not None and link.mtu == tap.mtu == 9000


async def test_multiqueue_and_vnet_hdr(netlink: Netlink, tun: None) -> None:
    request = TapRequest(mac=GUEST_MAC, queues=4, vnet_hdr=True)
    async with create_tap(request, netlink=netlink) as tap:
        assert len(tap.fds) == len(set(tap.fds)) == 4
        for fd in tap.fds:
            name, flags = tun_flags(fd)
            assert name == tap.name
            assert flags & IFF_TAP and flags & IFF_MULTI_QUEUE and flags & IFF_VNET_HDR
            assert not os.get_inheritable(fd)  # the caller hands them over explicitly


async def test_single_queue_without_vnet_hdr(netlink: Netlink, tun: None) -> None:
    request = TapRequest(mac=GUEST_MAC, vnet_hdr=False)
    async with create_tap(request, netlink=netlink) as tap:
        (fd,) = tap.fds
        _, flags = tun_flags(fd)
        assert flags & IFF_TAP
        assert not flags & (IFF_VNET_HDR | IFF_MULTI_QUEUE)


async def test_existing_name_is_busy(netlink: Netlink, bridge: MakeBridge, tun: None) -> None:
    br = await bridge()
    before = open_fd_count()
    with pytest.raises(ResourceBusyError, match=f"cannot create tap {br}: .* already exists"):
        await create_tap(TapRequest(mac=GUEST_MAC, name=br), netlink=netlink)
    assert open_fd_count() == before
    link = await netlink.get_link(br)
    assert link is not None and link.kind == "bridge"  # untouched

    async with create_tap(TapRequest(mac=GUEST_MAC), netlink=netlink) as tap:
        with pytest.raises(ResourceBusyError):
            await create_tap(TapRequest(mac=GUEST_MAC, name=tap.name), netlink=netlink)
        assert await netlink.link_exists(tap.name)  # the first owner keeps its tap
        assert len(tap.fds) == 1


async def test_missing_bridge_creates_nothing(netlink: Netlink, tun: None) -> None:
    missing = unique("qbm")
    before_fds, before_taps = open_fd_count(), await tun_links(netlink)
    with pytest.raises(NetlinkError) as info:
        await create_tap(TapRequest(mac=GUEST_MAC, bridge=missing), netlink=netlink)
    assert info.value.errno == errno.ENODEV
    assert str(info.value) == (
        f"cannot attach a tap to bridge {missing}: No such device (ENODEV)"
    )
    assert open_fd_count() == before_fds
    assert await tun_links(netlink) == before_taps


async def test_not_a_bridge(netlink: Netlink, tun: None) -> None:
    veth, peer = unique("qve"), unique("qvp")
    await netlink.create_veth(veth, peer)
    try:
        before = open_fd_count()
        with pytest.raises(HostError, match=f"{veth}: it is a veth device, not a bridge"):
            await create_tap(TapRequest(mac=GUEST_MAC, bridge=veth), netlink=netlink)
        assert open_fd_count() == before
        assert await tun_links(netlink) == set()
    finally:
        await netlink.delete_link(veth)


@pytest.mark.parametrize(
    ("method", "call"),
    [("setup_link", 1)],
)
async def test_failure_at_each_step_undoes_everything(
    netlink: Netlink, bridge: MakeBridge, tun: None, method: str, call: int
) -> None:
    br = await bridge()
    before = open_fd_count()
    faulty = FaultyLinks(netlink, method, call=call)
    request = TapRequest(mac=GUEST_MAC, bridge=br, queues=2)
    with pytest.raises(NetlinkError, match=f"injected failure in {method}") as info:
        await create_tap(request, netlink=faulty)  # type: ignore[arg-type]
    assert faulty.seen == call
    assert not getattr(info.value, "__notes__", None)
    assert open_fd_count() == before
    assert await tun_links(netlink) == set()
    assert await netlink.list_links(master=br) == []


async def test_rollback_failure_is_a_note(netlink: Netlink, tun: None) -> None:
    def close_tap_fd_behind_our_back() -> None:
        for entry in os.listdir("/proc/self/fd"):
            try:
                target = os.readlink(f"/proc/self/fd/{entry}")
            except OSError:
                continue
            if target == "/dev/net/tun":
                os.close(int(entry))

    faulty = FaultyLinks(netlink, "setup_link", before_failing=close_tap_fd_behind_our_back)
    before = open_fd_count()
    with pytest.raises(NetlinkError, match="injected failure in setup_link") as info:
        await create_tap(TapRequest(mac=GUEST_MAC), netlink=faulty)  # type: ignore[arg-type]
    (note,) = info.value.__notes__
    assert note.startswith("rollback of closing the fds of tap vnet")
    assert "Bad file descriptor" in note
    assert open_fd_count() == before


async def test_cancellation_undoes_everything(
    netlink: Netlink, bridge: MakeBridge, tun: None
) -> None:
    br = await bridge()
    before = open_fd_count()
    faulty = FaultyLinks(netlink, "setup_link", block=True)
    # create_tap() returns an awaitable, not a coroutine: ensure_future wraps it in a task.
    task = asyncio.ensure_future(
        create_tap(TapRequest(mac=GUEST_MAC, bridge=br), netlink=faulty)  # type: ignore[arg-type]
    )
    await asyncio.wait_for(faulty.blocked.wait(), 5)
    assert len(await tun_links(netlink)) == 1  # created, and now stuck before its set-up
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert open_fd_count() == before
    assert await tun_links(netlink) == set()


async def test_tap_vanishes_when_last_fd_closes(netlink: Netlink, tun: None) -> None:
    tap = await create_tap(TapRequest(mac=GUEST_MAC, queues=2), netlink=netlink)
    holder = os.dup(tap.fds[1])  # what QEMU would hold after we passed the fds
    try:
        tap.close_fds()
        tap.close_fds()  # idempotent
        assert tap.fds == []
        assert await netlink.link_exists(tap.name)  # the holder keeps it alive
    finally:
        os.close(holder)
    assert not await netlink.link_exists(tap.name)
    await tap.aclose()  # nothing left to delete: still fine


async def test_aclose_deletes_a_tap_still_held_elsewhere(netlink: Netlink, tun: None) -> None:
    before = open_fd_count()
    tap = await create_tap(TapRequest(mac=GUEST_MAC), netlink=netlink)
    holder = os.dup(tap.fds[0])
    try:
        await tap.aclose()
        assert tap.fds == []
        assert not await netlink.link_exists(tap.name)
        await tap.aclose()  # idempotent
    finally:
        os.close(holder)
    assert open_fd_count() == before


async def test_aclose_spares_a_newcomer_with_the_same_name(netlink: Netlink, tun: None) -> None:
    name = unique("qtap")
    old = await create_tap(TapRequest(mac=GUEST_MAC, name=name), netlink=netlink)
    old.close_fds()  # gone: nobody else held it
    async with create_tap(TapRequest(mac=GUEST_MAC, name=name), netlink=netlink) as new:
        assert new.index != old.index
        await old.aclose()
        assert await netlink.link_index(name) == new.index


async def test_delete_tap_by_ledger_entry(
    netlink: Netlink, bridge: MakeBridge, tun: None
) -> None:
    async with create_tap(TapRequest(mac=GUEST_MAC), netlink=netlink) as tap:
        holder = os.dup(tap.fds[0])
        tap.close_fds()
    # The context closed our fds and deleted the link; the holder only has a dead fd now.
    os.close(holder)
    assert not await delete_tap(tap.name, netlink=netlink)  # gone already: success

    tap = await create_tap(TapRequest(mac=GUEST_MAC), netlink=netlink)
    holder = os.dup(tap.fds[0])
    tap.close_fds()
    try:
        assert not await delete_tap(tap.name, netlink=netlink, index=tap.index + 1000)
        assert await netlink.link_exists(tap.name)
        assert await delete_tap(tap.name, netlink=netlink, index=tap.index)
        assert not await netlink.link_exists(tap.name)
    finally:
        os.close(holder)

    br = await bridge()  # a name that is not a tap is never deleted
    assert not await delete_tap(br, netlink=netlink)
    assert await netlink.link_exists(br)


async def test_tap_handle_basics(netlink: Netlink, tun: None) -> None:
    async with create_tap(TapRequest(mac=GUEST_MAC), netlink=netlink) as tap:
        assert isinstance(tap, Tap)
        copy = tap.fds
        copy.clear()
        assert len(tap.fds) == 1  # the property hands out a copy
        assert repr(tap).startswith(f"<Tap {tap.name} index={tap.index} queues=1 fds=")
    assert repr(tap).endswith("closed>")
