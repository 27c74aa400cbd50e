"""Interface facts through ioctls: index, MTU, driver, in this network namespace."""

from __future__ import annotations

import errno
from collections.abc import Awaitable, Callable

import pytest
from support import unique

from qctl.errors import NetlinkError
from qctl.host import Netlink
from qctl.host.ifioctl import if_driver, if_index, if_mtu


async def test_facts_of_a_bridge_and_a_veth(
    netlink: Netlink, bridge: Callable[..., Awaitable[str]]
) -> None:
    br = await bridge(mtu=1400)
    veth, peer = unique("qiv"), unique("qip")
    await netlink.create_veth(veth, peer)
    try:
        assert if_index(br) == await netlink.link_index(br)
        assert if_mtu(br) == 1400
        assert if_driver(br) == "bridge"
        assert if_driver(veth) == "veth"
    finally:
        await netlink.delete_link(veth)


def test_missing_interface_is_enodev(private_netns: None) -> None:
    for probe in (if_index, if_mtu, if_driver):
        with pytest.raises(NetlinkError) as info:
            probe("qnone0")
        assert info.value.errno == errno.ENODEV
        assert "qnone0" in str(info.value)
