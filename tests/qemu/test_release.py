"""Giving back host resources from ledger entries."""

from __future__ import annotations

from pathlib import Path

from support import unique

from qctl import parse_network
from qctl.host import Netlink, Sysfs, TapRequest, create_tap
from qctl.qemu.ledger import DeviceKind, EntryState, Ledger, LedgerEntry
from qctl.qemu.network import NetworkStore
from qctl.qemu.release import HostSide, release_ledger
from qctl.qemu.state import StateRoot
from qctl.types import MACAddress

MAC = MACAddress.parse("52:54:00:80:00:01")


async def test_a_newer_tap_that_took_the_name_is_spared(
    netlink: Netlink, tun: None, tmp_path: Path
) -> None:
    name = unique("qrt")
    old = await create_tap(TapRequest(mac=MAC, name=name), netlink=netlink)
    entry = LedgerEntry(
        alias="net0",
        kind=DeviceKind.INTERFACE,
        state=EntryState.ATTACHED,
        tap=name,
        tap_index=old.index,
    )
    await old.aclose()  # QEMU exited: its tap went with it
    newer = await create_tap(TapRequest(mac=MAC, name=name), netlink=netlink)  # another domain's
    try:
        ledger = Ledger()
        ledger.put(entry)
        host = HostSide(netlink, Sysfs(), NetworkStore(StateRoot(tmp_path)), "old-domain")
        assert await release_ledger(ledger, host) == []
        assert await netlink.link_index(name) == newer.index
    finally:
        await newer.aclose()


async def test_a_pool_device_handed_on_is_not_taken_back(tmp_path: Path) -> None:
    store = NetworkStore(StateRoot(tmp_path))
    store.define(
        parse_network(
            "<network><name>p</name><forward mode='hostdev'>"
            "<address type='pci' domain='0x0000' bus='0x3b' slot='0x10' function='0x0'/>"
            "</forward></network>"
        )
    )
    device = await store.allocate("p", "b", "hostdev0")  # given back by a, now b's
    await store.release("p", device, domain="a", alias="hostdev0")
    assert [(a.domain, a.device) for a in store.allocations()] == [("b", device)]
    await store.release("p", device, domain="b", alias="hostdev0")
    assert store.allocations() == []
