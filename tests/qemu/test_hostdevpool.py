"""type='network' interfaces on hostdev pools at start: a pool device each, rewritten as
hostdev interfaces, given back when the start fails."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from qemu.test_command import load_caps

from qctl.conf import InterfaceType, parse_device, parse_domain, parse_network
from qctl.errors import ResourceBusyError, UnsupportedError
from qctl.qemu.dryrun import dry_run
from qctl.qemu.hostdevpool import pool_interface, take_pool_devices
from qctl.qemu.network import NetworkStore
from qctl.qemu.orphan import note_start
from qctl.qemu.plan import plan
from qctl.qemu.state import StateRoot
from qctl.types import PCIAddress

DOMAIN = """<domain type='qemu'>
  <name>pooled</name>
  <memory unit='MiB'>64</memory>
  <os><type machine='pc'>hvm</type></os>
  <devices>
    <interface type='network'>
      <source network='vfs'/>
      <vlan><tag id='9'/></vlan>
    </interface>
    <interface type='network'>
      <source network='vfs'/>
    </interface>
    <interface type='network'>
      <source network='lan'/>
    </interface>
  </devices>
</domain>
"""


def starting(store: NetworkStore, name: str) -> NetworkStore:
    """As ``start`` does before it takes pool devices: its intent is on disk, so what it
    takes is not mistaken for the leftovers of a dead domain."""
    directory = store.root.domain(name)
    directory.make()
    note_start(directory)
    return store


@pytest.fixture
def store(tmp_path: Path) -> NetworkStore:
    store = NetworkStore(StateRoot(tmp_path / "state"))
    store.define(
        parse_network(
            "<network><name>vfs</name><forward mode='hostdev' managed='yes'>"
            "<address type='pci' bus='0x3b' slot='0x10' function='0x0'/>"
            "<address type='pci' bus='0x3b' slot='0x10' function='0x2'/>"
            "</forward><vlan><tag id='7'/></vlan></network>"
        )
    )
    store.define(
        parse_network(
            "<network><name>lan</name><forward mode='bridge'/><bridge name='br0'/></network>"
        )
    )
    return store


async def test_each_pool_interface_gets_a_device_and_gives_it_back(store: NetworkStore) -> None:
    planned = plan(parse_domain(DOMAIN, source="pooled.xml"), load_caps())
    async with contextlib.AsyncExitStack() as stack:
        pooled = await take_pool_devices(planned, stack, starting(store, planned.name))
        first, second, bridged = pooled.domain.interfaces
        assert [i.type for i in (first, second, bridged)] == [
            InterfaceType.HOSTDEV,
            InterfaceType.HOSTDEV,
            InterfaceType.NETWORK,
        ]
        assert first.source is not None and first.source.pci == PCIAddress(0, 0x3B, 0x10, 0)
        assert first.managed is True and first.address == planned.interfaces[0].address
        # the interface's own VLAN wins over the pool's
        assert [i.vlan.tags[0].id for i in (first, second) if i.vlan] == [9, 7]
        assert pooled.pools == {
            "net0": ("vfs", "0000:3b:10.0"),
            "net1": ("vfs", "0000:3b:10.2"),
        }
        assert len(store.allocations()) == 2
    assert store.allocations() == []  # the stack (a failed start) gives them back


async def test_an_exhausted_pool_gives_back_what_was_taken(store: NetworkStore) -> None:
    await starting(store, "other").allocate("vfs", "other", "net5")
    planned = plan(parse_domain(DOMAIN, source="pooled.xml"), load_caps())
    stack = contextlib.AsyncExitStack()
    with pytest.raises(ResourceBusyError) as busy:
        await take_pool_devices(planned, stack, starting(store, planned.name))
    assert str(busy.value) == "pooled.xml:10: network 'vfs' has no free device left"
    await stack.aclose()
    assert [a.domain for a in store.allocations()] == ["other"]


def test_pool_interface_drops_what_a_passed_through_nic_has_not(store: NetworkStore) -> None:
    iface = parse_device(
        "<interface type='network'><source network='vfs'/><model type='virtio'/>"
        "<driver queues='2'/></interface>"
    )
    assert iface.type is InterfaceType.NETWORK
    rewritten = pool_interface(iface, store.get("vfs"), "0000:3b:10.2")
    assert (rewritten.model, rewritten.driver) == (None, None)
    assert rewritten.vlan is not None and rewritten.vlan.tags[0].id == 7


def test_a_vlan_on_a_bridge_pool_interface_is_refused_with_its_line(store: NetworkStore) -> None:
    xml = DOMAIN.replace(
        "<source network='vfs'/>\n      <vlan>", "<source network='lan'/>\n      <vlan>"
    )
    defn = parse_domain(xml, source="pooled.xml")
    with pytest.raises(UnsupportedError) as refused:
        dry_run(defn, load_caps(), networks=store.get)
    assert str(refused.value) == (
        "pooled.xml:6: <vlan> on an interface of bridge pool 'lan' is not supported by qctl "
        "(only SR-IOV VFs get a VLAN)"
    )
