"""Hot-plug and unplug on the real QEMU with the bundled guest (TCG, private netns).

Each NIC type is attached and seen by the guest with its MAC, then detached: DEVICE_DELETED,
the guest no longer reports it, the tap is gone and the ledger holds only what it held
before. Also: two detaches at once, a detach that returns "pending" and is finished by the
late event, and QEMU's "device not found" taken as already gone.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from support import guest_domain_xml, unique, wait_for_nics, wait_until

from qctl import DetachResult, Domain, HotplugError, UnplugRejected, parse_domain, parse_network
from qctl.host import Netlink
from qctl.qemu.ledger import DeviceKind, EntryState, LedgerEntry
from qctl.qmp import QMPEvent

pytestmark = [pytest.mark.qemu, pytest.mark.guest]

BOOT_TIMEOUT = 90.0
SEEN_TIMEOUT = 30.0
SPARE_PORTS = "\n".join(
    f"    <controller type='pci' index='{i}' model='pcie-root-port'/>" for i in range(1, 5)
)


async def _links(netlink: Netlink) -> set[str]:
    return {link.name for link in await netlink.list_links()}


@pytest.fixture
async def guest(
    guest_paths: tuple[Path, Path], tmp_path: Path, netlink: Netlink
) -> AsyncIterator[tuple[Domain, Path]]:
    """A booted guest with no NIC and four empty root ports; stopped afterwards."""
    console = tmp_path / "serial.log"
    defn = parse_domain(guest_domain_xml(unique("hp"), SPARE_PORTS, console=console))
    dom = await Domain.start(defn, state_root=tmp_path / "state", netlink=netlink)
    try:
        async with asyncio.timeout(BOOT_TIMEOUT):
            await wait_for_nics(console, lambda nics: nics == {})
        yield dom, console
    finally:
        await dom.stop(force=True)


async def _attach_and_see(dom: Domain, console: Path, xml: str, mac: str) -> str:
    live = await dom.attach_device(xml)
    assert live.alias is not None
    async with asyncio.timeout(SEEN_TIMEOUT):
        await wait_for_nics(console, lambda nics: mac in nics)
    return live.alias


async def _attach_ethernet(dom: Domain, console: Path, mac: str) -> str:
    """Attach an ethernet e1000e NIC (a model the test guest has a driver for) and wait
    until the guest sees it; returns its alias."""
    xml = f"<interface type='ethernet'><mac address='{mac}'/><model type='e1000e'/></interface>"
    return await _attach_and_see(dom, console, xml, mac)


@pytest.mark.parametrize("kind", ["bridge", "user", "ethernet", "network"])
async def test_attach_then_detach_each_type(
    guest: tuple[Domain, Path],
    bridge: Callable[..., Awaitable[str]],
    netlink: Netlink,
    kind: str,
) -> None:
    dom, console = guest
    br = await bridge()
    mac = "52:54:00:20:00:01"
    source = {
        "bridge": f"<source bridge='{br}'/>",
        "network": "<source network='lan'/>",
    }.get(kind, "")
    if kind == "network":
        dom.networks.define(
            parse_network(
                f"<network><name>lan</name><forward mode='bridge'/><bridge name='{br}'/></network>"
            )
        )
    xml = (
        f"<interface type='{kind}'><mac address='{mac}'/>{source}<model type='virtio'/></interface>"
    )
    alias = await _attach_and_see(dom, console, xml, mac)
    entry = dom.ledger.get(alias)
    assert entry is not None and entry.state == "attached"
    tap = entry.tap
    if kind == "user":
        assert tap is None
    else:
        assert tap is not None and tap in await _links(netlink)
        link = await netlink.get_link(tap)
        assert link is not None
        assert link.master == (br if kind in ("bridge", "network") else None)
    assert alias in dom.xml()

    assert await dom.detach_device(alias) is DetachResult.DETACHED
    async with asyncio.timeout(SEEN_TIMEOUT):
        await wait_for_nics(console, lambda nics: mac not in nics)
    assert len(dom.ledger) == 0
    assert alias not in dom.xml()
    assert alias not in await dom.monitor.peripherals()
    assert f"host{alias}" not in await dom.monitor.netdevs()
    if tap is not None:
        assert tap not in await _links(netlink)


async def test_two_nics_detached_concurrently(
    guest: tuple[Domain, Path], bridge: Callable[..., Awaitable[str]], netlink: Netlink
) -> None:
    dom, console = guest
    br = await bridge()
    macs = ["52:54:00:20:01:01", "52:54:00:20:01:02"]
    aliases = []
    for mac in macs:
        xml = (
            f"<interface type='bridge'><mac address='{mac}'/><source bridge='{br}'/>"
            "<model type='virtio'/></interface>"
        )
        aliases.append(await _attach_and_see(dom, console, xml, mac))
    taps = {e.tap for e in dom.ledger}
    results = await asyncio.gather(*(dom.detach_device(a) for a in aliases))
    assert results == [DetachResult.DETACHED, DetachResult.DETACHED]
    async with asyncio.timeout(SEEN_TIMEOUT):
        await wait_for_nics(console, lambda nics: nics == {})
    assert len(dom.ledger) == 0
    assert not taps & await _links(netlink)


async def test_pending_detach_is_finished_by_the_late_event(
    guest: tuple[Domain, Path], netlink: Netlink
) -> None:
    dom, console = guest
    mac = "52:54:00:20:02:01"
    alias = await _attach_ethernet(dom, console, mac)
    tap = dom.ledger.get(alias).tap  # type: ignore[union-attr]
    with dom.events() as events:
        assert await dom.detach_device(alias, wait=0) is DetachResult.PENDING
        entry = dom.ledger.get(alias)
        assert entry is not None and entry.state == "detaching"
        assert alias in dom.xml()
        async with asyncio.timeout(SEEN_TIMEOUT):
            async for event in events:
                if getattr(event, "alias", None) == alias:
                    break
        # The late event finishes the job in the background.
        async with asyncio.timeout(SEEN_TIMEOUT):
            await wait_until(lambda: dom.ledger.get(alias) is None)
    assert alias not in dom.xml()
    assert tap not in await _links(netlink)
    async with asyncio.timeout(SEEN_TIMEOUT):
        await wait_for_nics(console, lambda nics: mac not in nics)


async def test_device_qemu_no_longer_has_is_taken_as_gone(
    guest: tuple[Domain, Path], netlink: Netlink
) -> None:
    dom, _ = guest
    # The ledger claims a device QEMU does not have (as after a crash mid-way): QEMU's
    # "device not found" for device_del means already gone, and the books are finished.
    await dom.runtime.record(
        LedgerEntry(
            alias="ua-ghost",
            kind=DeviceKind.INTERFACE,
            state=EntryState.ATTACHED,
            netdev_id="hostua-ghost",
        )
    )
    assert await dom.detach_device("ua-ghost") is DetachResult.DETACHED
    assert dom.ledger.get("ua-ghost") is None
    assert "ua-ghost" not in json.dumps(dom.runtime.directory.read_status())


async def test_two_handles_on_one_domain_share_the_books(
    guest: tuple[Domain, Path], netlink: Netlink
) -> None:
    dom, console = guest
    # A second handle, as another qctl process (say `qctl events`) would hold: it uses a
    # monitor of its own, and each job starts from the status file as the other left it.
    other = await Domain.connect(dom.name, state_root=dom.state_root)
    try:
        mac = "52:54:00:20:04:01"
        alias = await _attach_ethernet(dom, console, mac)
        assert await other.detach_device(alias) is DetachResult.DETACHED
        assert alias not in other.xml()
        second = await other.attach_device(
            "<interface type='user'><mac address='52:54:00:20:04:02'/>"
            "<model type='virtio'/></interface>"
        )
        assert second.alias == alias  # the freed alias, as the status file says
        assert await dom.detach_device(second.alias) is DetachResult.DETACHED
        assert len(dom.ledger) == 0 and len(other.ledger) == 0
    finally:
        await other.aclose()


async def test_unplug_refused_by_the_guest_keeps_the_device(
    guest: tuple[Domain, Path], netlink: Netlink
) -> None:
    dom, console = guest
    mac = "52:54:00:20:05:01"
    alias = await _attach_ethernet(dom, console, mac)
    tap = dom.ledger.get(alias).tap  # type: ignore[union-attr]
    # The guest's refusal, as QEMU reports it, without a guest that refuses on cue: the
    # request reaches no device, and QEMU's DEVICE_UNPLUG_GUEST_ERROR is delivered.
    real_del = dom.monitor.device_del

    async def refused(device: str) -> None:
        dom.runtime.hub.publish(UnplugRejected(None, device))

    dom.monitor.device_del = refused  # type: ignore[method-assign]
    try:
        with pytest.raises(HotplugError, match="rejected by the guest"):
            await dom.detach_device(alias)
    finally:
        dom.monitor.device_del = real_del  # type: ignore[method-assign]
    entry = dom.ledger.get(alias)
    assert entry is not None and entry.state == "attached"
    assert tap in await _links(netlink) and alias in dom.xml()
    assert await dom.detach_device(alias) is DetachResult.DETACHED  # a later try works


async def test_other_events_for_a_nic_do_not_disturb_its_detach(
    guest: tuple[Domain, Path], netlink: Netlink
) -> None:
    dom, console = guest
    mac = "52:54:00:20:06:01"
    alias = await _attach_ethernet(dom, console, mac)
    real_del = dom.monitor.device_del

    async def held(device: str) -> None:  # the guest takes its time: no event yet
        return None

    def qemu_sends(name: str, data: dict[str, str]) -> None:
        dom.monitor.client._deliver(QMPEvent(name, data))

    dom.monitor.device_del = held  # type: ignore[method-assign]
    try:
        detach = asyncio.create_task(dom.detach_device(alias, wait=1.0))
        await asyncio.sleep(0.2)
        # The guest changes the NIC's RX filter while the unplug is pending (as it does
        # when it brings a NIC up): that is no answer to the unplug.
        qemu_sends("NIC_RX_FILTER_CHANGED", {"name": alias, "path": f"/machine/peripheral/{alias}"})
        assert await detach is DetachResult.PENDING
        assert dom.ledger.get(alias).state == "detaching"  # type: ignore[union-attr]
    finally:
        dom.monitor.device_del = real_del  # type: ignore[method-assign]
    await real_del(alias)  # now QEMU really removes it; its event finishes the detach
    async with asyncio.timeout(SEEN_TIMEOUT):
        await wait_until(lambda: dom.ledger.get(alias) is None)
    assert alias not in dom.xml()
