"""The two-host rig itself: two namespaces that reach each other over TEST-NET only."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from twohost import TwoHosts

from qctl.host import Netlink


@pytest.fixture
def rig(private_netns: None, tmp_path: Path) -> Iterator[TwoHosts]:
    hosts = TwoHosts(tmp_path)
    yield hosts
    hosts.close()


async def test_hosts_reach_each_other_and_keep_their_links_apart(rig: TwoHosts) -> None:
    with rig.b.entered():
        server = socket.create_server((rig.b.address, 0))
    port = server.getsockname()[1]
    try:
        with rig.a.entered():
            client = socket.create_connection((rig.b.address, port), timeout=5)
        peer, (address, _) = server.accept()
        assert address == rig.a.address
        client.close()
        peer.close()
    finally:
        server.close()
    # outside both blocks this process is back home: no address, veth or bridge of theirs
    assert not {host.veth for host in rig.hosts} & {n for _, n in socket.if_nameindex()}
    with pytest.raises(OSError):
        socket.create_server((rig.a.address, 0)).close()
    for host in rig.hosts:
        assert host.links() == {"lo", host.veth, host.bridge}
        with host.entered():
            async with Netlink() as netlink:  # a socket made inside sees that host's links
                assert await netlink.link_exists(host.bridge)
                assert await netlink.link_exists(host.veth)
