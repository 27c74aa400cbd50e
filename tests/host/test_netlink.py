"""The rtnetlink facade against the real kernel, in a private network namespace."""

from __future__ import annotations

import errno
from collections.abc import Awaitable, Callable

import pytest
from support import unique

from qctl.errors import NetlinkError
from qctl.host import Netlink, netlink_error
from qctl.types import MACAddress

MakeBridge = Callable[..., Awaitable[str]]


def test_netlink_error_names_errno() -> None:
    exc = netlink_error("cannot enslave vnet3 to br-missing", errno.ENODEV)
    assert str(exc) == "cannot enslave vnet3 to br-missing: No such device (ENODEV)"
    assert exc.errno == errno.ENODEV
    custom = netlink_error("cannot set MTU of x to 1", errno.EINVAL, "mtu less than minimum")
    assert str(custom) == "cannot set MTU of x to 1: mtu less than minimum (EINVAL)"


async def test_bridge_lifecycle(netlink: Netlink, bridge: MakeBridge) -> None:
    name = await bridge()
    link = await netlink.get_link(name)
    assert link is not None
    assert (link.name, link.kind, link.master, link.up) == (name, "bridge", None, False)
    assert await netlink.link_exists(name)
    assert await netlink.link_index(name) == link.index

    await netlink.set_mtu(name, 1400)
    mac = MACAddress.parse("52:54:00:12:34:56")
    await netlink.set_mac(name, mac)
    await netlink.set_up(name)
    link = await netlink.get_link(name)
    assert link is not None
    assert (link.mtu, link.mac, link.up) == (1400, mac, True)

    await netlink.set_down(name)
    link = await netlink.get_link(name)
    assert link is not None and not link.up


async def test_ports_of_a_bridge(netlink: Netlink, bridge: MakeBridge) -> None:
    br = await bridge()
    port, peer = unique("qve"), unique("qvp")
    await netlink.create_veth(port, peer)
    try:
        assert await netlink.list_links(master=br) == []
        await netlink.set_master(port, br)
        link = await netlink.get_link(port)
        assert link is not None and (link.kind, link.master) == ("veth", br)
        assert [p.name for p in await netlink.list_links(master=br)] == [port]
        assert {port, peer, br} <= {link.name for link in await netlink.list_links()}

        await netlink.set_nomaster(port)
        link = await netlink.get_link(port)
        assert link is not None and link.master is None
        assert await netlink.list_links(master=br) == []
    finally:
        await netlink.delete_link(port)
    # Deleting one end of a veth pair takes the peer with it.
    assert not await netlink.link_exists(peer)


async def test_delete_link(netlink: Netlink, bridge: MakeBridge) -> None:
    name = await bridge()
    index = await netlink.link_index(name)
    assert index is not None
    assert not await netlink.delete_link(name, index=index + 1000)
    assert await netlink.link_exists(name)
    assert await netlink.delete_link(name, index=index)
    assert not await netlink.link_exists(name)
    # Deleting what is gone is success, reported as "nothing deleted".
    assert not await netlink.delete_link(name)


async def test_queries_of_missing_link(netlink: Netlink) -> None:
    missing = unique("qno")
    assert await netlink.get_link(missing) is None
    assert await netlink.link_index(missing) is None
    assert not await netlink.link_exists(missing)


@pytest.mark.parametrize(
    ("operation", "message"),
    [
        ("set_mtu", "cannot set MTU of {x} to 1400: No such device (ENODEV)"),
        ("set_mac", "cannot set MAC address of {x} to 52:54:00:00:00:01: No such device (ENODEV)"),
        ("set_up", "cannot bring {x} up: No such device (ENODEV)"),
        ("set_down", "cannot bring {x} down: No such device (ENODEV)"),
        ("set_nomaster", "cannot release {x} from its master: No such device (ENODEV)"),
        ("list_links", "cannot list ports of {x}: No such device (ENODEV)"),
    ],
)
async def test_operations_on_missing_link(netlink: Netlink, operation: str, message: str) -> None:
    missing = unique("qno")
    calls = {
        "set_mtu": lambda: netlink.set_mtu(missing, 1400),
        "set_mac": lambda: netlink.set_mac(missing, MACAddress.parse("52:54:00:00:00:01")),
        "set_up": lambda: netlink.set_up(missing),
        "set_down": lambda: netlink.set_down(missing),
        "set_nomaster": lambda: netlink.set_nomaster(missing),
        "list_links": lambda: netlink.list_links(master=missing),
    }
    with pytest.raises(NetlinkError) as info:
        await calls[operation]()
    assert info.value.errno == errno.ENODEV
    assert str(info.value) == message.format(x=missing)


async def test_enslave_to_missing_bridge(netlink: Netlink) -> None:
    port, peer, missing = unique("qve"), unique("qvp"), unique("qbm")
    await netlink.create_veth(port, peer)
    try:
        with pytest.raises(NetlinkError) as info:
            await netlink.set_master(port, missing)
    finally:
        await netlink.delete_link(port)
    assert info.value.errno == errno.ENODEV
    assert str(info.value) == f"cannot enslave {port} to {missing}: No such device (ENODEV)"


async def test_kernel_errors_carry_errno_and_text(netlink: Netlink, bridge: MakeBridge) -> None:
    name = await bridge()
    with pytest.raises(NetlinkError) as info:
        await netlink.create_bridge(name)
    assert info.value.errno == errno.EEXIST
    assert str(info.value).startswith(f"cannot create bridge {name}: ")
    assert str(info.value).endswith("(EEXIST)")
    assert info.value.__cause__ is not None  # pyroute2's exception, kept for debugging

    with pytest.raises(NetlinkError) as info:
        await netlink.set_mtu(name, 1_000_000)
    assert info.value.errno == errno.EINVAL
    # The kernel's extended ack says which limit was hit.
    assert str(info.value).startswith(f"cannot set MTU of {name} to 1000000: mtu ")


async def test_not_a_bridge_cannot_be_master(netlink: Netlink) -> None:
    a, b, c, d = (unique(p) for p in ("qva", "qvb", "qvc", "qvd"))
    await netlink.create_veth(a, b)
    await netlink.create_veth(c, d)
    try:
        with pytest.raises(NetlinkError) as info:
            await netlink.set_master(a, c)
        assert info.value.errno == errno.EOPNOTSUPP
        assert str(info.value).startswith(f"cannot enslave {a} to {c}: ")
    finally:
        await netlink.delete_link(a)
        await netlink.delete_link(c)


async def test_closed_facade_refuses(private_netns: None) -> None:
    netlink = Netlink()
    assert await netlink.link_exists("lo")
    await netlink.aclose()
    await netlink.aclose()  # idempotent
    with pytest.raises(NetlinkError) as info:
        await netlink.link_exists("lo")
    assert info.value.errno == errno.EBADF


async def test_unused_facade_closes_cleanly() -> None:
    async with Netlink():
        pass
