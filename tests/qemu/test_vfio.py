"""VFIO devices on the real QEMU, with a fake sysfs tree and a fake PF for the hardware.

This machine has no IOMMU, VFIO or SR-IOV: the PF and its VFs exist only in a fake sysfs
tree (with a fake kernel behind its writes) and a fake netlink PF. QEMU is real, so its
refusal of a vfio-pci device that does not exist is a real rollback case. Where a test
needs an attach to succeed, ``device_add`` is made to report success without QEMU (the one
QMP step faked), and everything around it is real.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from host.fakesysfs import FakeSysfs, FakeVFNetlink, vf_address
from support import guest_domain_xml, unique

from qctl import (
    DetachResult,
    Domain,
    HostError,
    HostPaths,
    HotplugError,
    InterfaceType,
    MACAddress,
    NetworkStore,
    PCIAddress,
    ProcessError,
    ResourceBusyError,
    StateRoot,
    UnsupportedError,
    ValidationError,
    parse_domain,
    parse_network,
)
from qctl.host import PCIDevice, VFConfig
from qctl.qemu.orphan import note_start

pytestmark = [pytest.mark.qemu]

PF = "fakepf0"
PF_ADDRESS = PCIAddress.parse("0000:3b:00.0")
ORIGINAL = VFConfig(MACAddress.parse("02:aa:bb:cc:dd:01"), 42)
GUEST_MAC = "52:54:00:70:00:01"
PORTS = "\n".join(
    f"    <controller type='pci' index='{i}' model='pcie-root-port'/>" for i in range(1, 4)
)


@dataclass
class Rig:
    dom: Domain
    sysfs: FakeSysfs
    netlink: FakeVFNetlink
    vfs: list[PCIAddress]


@pytest.fixture
async def rig(guest_paths: tuple[Path, Path], tmp_path: Path) -> AsyncIterator[Rig]:
    fake = FakeSysfs(tmp_path)
    fake.add_driver("vfio-pci")
    vfs = fake.add_pf(PF, PF_ADDRESS, vfs=2)
    netlink = FakeVFNetlink()
    netlink.add_pf(PF, vfs=2, mac=ORIGINAL.mac, vlan=ORIGINAL.vlan)
    defn = parse_domain(guest_domain_xml(unique("vf"), PORTS, console=tmp_path / "serial.log"))
    dom = await Domain.start(
        defn,
        state_root=tmp_path / "state",
        netlink=netlink,
        host_paths=HostPaths(sysfs=fake.sysfs),
    )
    try:
        yield Rig(dom, fake, netlink, vfs)
    finally:
        await dom.stop(force=True)


def hostdev_interface(vf: PCIAddress, mac: str = GUEST_MAC) -> str:
    return (
        f"<interface type='hostdev' managed='yes'><mac address='{mac}'/><source>"
        f"<address type='pci' domain='0x{vf.domain:04x}' bus='0x{vf.bus:02x}' "
        f"slot='0x{vf.slot:02x}' function='0x{vf.function:x}'/></source></interface>"
    )


def hostdev(vf: PCIAddress) -> str:
    return (
        "<hostdev mode='subsystem' type='pci' managed='yes'><source>"
        f"<address domain='0x{vf.domain:04x}' bus='0x{vf.bus:02x}' slot='0x{vf.slot:02x}' "
        f"function='0x{vf.function:x}'/></source></hostdev>"
    )


def fake_device_add(dom: Domain) -> None:
    """Make QEMU's ``device_add`` report success without a device (there is no real VF)."""

    async def accepted(props: Any) -> None:
        return None

    dom.monitor.device_add = accepted  # type: ignore[method-assign]


def assert_vf_as_before(rig: Rig, vf: PCIAddress, index: int) -> None:
    assert rig.netlink.config(PF, index) == ORIGINAL
    assert rig.sysfs.driver_of(vf) == "ixgbevf"
    assert rig.sysfs.override_of(vf) is None


async def test_qemu_refusing_the_vf_restores_mac_vlan_and_driver(rig: Rig) -> None:
    vf = rig.vfs[1]
    with pytest.raises(HotplugError, match="device_add") as caught:
        await rig.dom.attach_device(hostdev_interface(vf))
    assert str(vf) in str(caught.value.__cause__)  # QEMU's own refusal names the device
    set_calls = [c for c in rig.netlink.calls if c.op == "set"]
    assert set_calls[0].mac == GUEST_MAC and set_calls[0].vf == 1  # it was really changed…
    assert_vf_as_before(rig, vf, 1)  # …and really put back
    assert len(rig.dom.ledger) == 0
    assert "hostdev" not in json.dumps(rig.dom.directory.read_status())
    assert not await rig.dom.monitor.peripherals() & {"hostdev0"}


async def test_attached_vf_is_recorded_and_detach_through_hostdev_path_clears_it(
    rig: Rig,
) -> None:
    vf = rig.vfs[0]
    fake_device_add(rig.dom)
    live = await rig.dom.attach_device(hostdev_interface(vf))
    entry = rig.dom.ledger.get(live.alias)
    assert entry is not None and entry.state == "attached"
    assert entry.saved_vf is not None and entry.saved_vf.mac == str(ORIGINAL.mac)
    assert entry.saved_vf.vlan == ORIGINAL.vlan and entry.original_driver == "ixgbevf"
    assert rig.netlink.config(PF, 0) == VFConfig(MACAddress.parse(GUEST_MAC), 0)
    assert rig.sysfs.driver_of(vf) == "vfio-pci"
    assert 'type="hostdev"' in rig.dom.xml()

    # Detach it as a <hostdev> (the other list): QEMU never had it, so "not found"
    # means gone, and the books are finished for the interface too.
    assert await rig.dom.detach_device(hostdev(vf)) is DetachResult.DETACHED
    assert len(rig.dom.ledger) == 0
    assert 'type="hostdev"' not in rig.dom.xml()
    assert_vf_as_before(rig, vf, 0)


async def test_qemu_dying_gives_the_vf_back(rig: Rig) -> None:
    vf = rig.vfs[0]
    fake_device_add(rig.dom)
    await rig.dom.attach_device(hostdev_interface(vf))
    os.kill(rig.dom.process.pid, signal.SIGKILL)
    async with asyncio.timeout(10):
        await rig.dom.wait_exit()
    assert_vf_as_before(rig, vf, 0)


async def test_device_in_use_and_non_endpoint_are_refused(rig: Rig) -> None:
    vf = rig.vfs[0]
    fake_device_add(rig.dom)
    first = await rig.dom.attach_device(hostdev_interface(vf))
    # The same device twice in one domain is a configuration error, as in libvirt.
    with pytest.raises(ValidationError, match="already exists in the domain"):
        await rig.dom.attach_device(hostdev_interface(vf, mac="52:54:00:70:00:02"))

    bridge = PCIAddress.parse("0000:3c:00.0")
    rig.sysfs.add_pci(bridge, cls=0x060400, iommu_group=rig.sysfs.new_group())
    writes = len(rig.sysfs.kernel.writes)
    with pytest.raises(HotplugError) as refused:
        await rig.dom.attach_device(hostdev(bridge))
    assert isinstance(refused.value.__cause__, HostError)
    assert "not an endpoint" in str(refused.value.__cause__)
    assert len(rig.sysfs.kernel.writes) == writes  # nothing was touched
    assert [e.alias for e in rig.dom.ledger] == [first.alias]


async def test_hostdev_pool_allocates_and_returns_vfs(rig: Rig) -> None:
    rig.dom.networks.define(
        parse_network(
            f"<network><name>sriov</name><forward mode='hostdev' managed='yes'>"
            f"<pf dev='{PF}'/></forward></network>"
        )
    )
    nic = (
        f"<interface type='network'><mac address='{GUEST_MAC}'/>"
        "<source network='sriov'/></interface>"
    )
    # QEMU refuses the (fake) VF: the allocation goes back with everything else.
    with pytest.raises(HotplugError, match="device_add"):
        await rig.dom.attach_device(nic)
    assert rig.dom.networks.allocations() == []
    assert_vf_as_before(rig, rig.vfs[0], 0)

    fake_device_add(rig.dom)
    live = await rig.dom.attach_device(nic)
    held = rig.dom.networks.allocations()
    assert [(a.network, a.device, a.alias) for a in held] == [
        ("sriov", str(rig.vfs[0]), live.alias)
    ]
    other = await rig.dom.attach_device(
        "<interface type='network'><mac address='52:54:00:70:00:09'/>"
        "<source network='sriov'/></interface>"
    )
    assert {a.device for a in rig.dom.networks.allocations()} == {str(v) for v in rig.vfs}
    with pytest.raises(ResourceBusyError, match="no free device"):
        await rig.dom.attach_device(
            "<interface type='network'><mac address='52:54:00:70:00:0a'/>"
            "<source network='sriov'/></interface>"
        )
    for alias in (live.alias, other.alias):
        assert await rig.dom.detach_device(alias) is DetachResult.DETACHED
    assert rig.dom.networks.allocations() == []
    assert_vf_as_before(rig, rig.vfs[0], 0)
    assert_vf_as_before(rig, rig.vfs[1], 1)
    assert vf_address(PF_ADDRESS, 1) == rig.vfs[1]


async def test_start_with_a_vf_qemu_refuses_restores_it(
    guest_paths: tuple[Path, Path], tmp_path: Path
) -> None:
    fake = FakeSysfs(tmp_path)
    fake.add_driver("vfio-pci")
    vfs = fake.add_pf(PF, PF_ADDRESS, vfs=2)
    netlink = FakeVFNetlink()
    netlink.add_pf(PF, vfs=2, mac=ORIGINAL.mac, vlan=ORIGINAL.vlan)
    name = unique("vfs")
    defn = parse_domain(
        guest_domain_xml(name, hostdev_interface(vfs[1]), console=tmp_path / "serial.log")
    )
    # The VF's group device (a stand-in): a confined QEMU gets it, and root gets it back.
    group = PCIDevice(vfs[1], sysfs=fake.sysfs).iommu_group()
    vfio_dir = tmp_path / "dev-vfio"
    vfio_dir.mkdir()
    (vfio_dir / str(group)).write_text("")
    with pytest.raises(ProcessError, match=str(vfs[1])):
        await Domain.start(
            defn,
            state_root=tmp_path / "state",
            netlink=netlink,
            host_paths=HostPaths(sysfs=fake.sysfs, vfio_dir=str(vfio_dir)),
        )
    assert (vfio_dir / str(group)).stat().st_uid == 0
    assert next(c.mac for c in netlink.calls if c.op == "set") == GUEST_MAC
    assert netlink.config(PF, 1) == ORIGINAL
    assert fake.driver_of(vfs[1]) == "ixgbevf" and fake.override_of(vfs[1]) is None
    assert not (tmp_path / "state" / "domains" / name).exists()


# -- issue 12: VF VLANs, hostdev pools at start, unassigned hostdevs ------------------------


def with_vlan(xml: str, tag: int) -> str:
    return xml.replace("</interface>", f"<vlan><tag id='{tag}'/></vlan></interface>")


async def test_a_vf_gets_its_vlan_and_gives_it_back(rig: Rig) -> None:
    vf = rig.vfs[1]
    fake_device_add(rig.dom)
    live = await rig.dom.attach_device(with_vlan(hostdev_interface(vf), 100))
    entry = rig.dom.ledger.get(live.alias)
    assert entry is not None and entry.saved_vf is not None
    assert entry.saved_vf.vlan == ORIGINAL.vlan  # saved before the change
    assert rig.netlink.config(PF, 1) == VFConfig(MACAddress.parse(GUEST_MAC), 100)
    assert '<tag id="100"/>' in rig.dom.xml()
    assert await rig.dom.detach_device(live.alias) is DetachResult.DETACHED
    assert_vf_as_before(rig, vf, 1)


async def test_a_vlan_on_a_device_that_is_not_a_vf_is_refused(rig: Rig) -> None:
    nic = PCIAddress.parse("0000:3d:00.0")
    rig.sysfs.add_pci(nic, driver="e1000e", iommu_group=rig.sysfs.new_group())
    calls = len(rig.netlink.calls)
    with pytest.raises(HotplugError) as refused:
        await rig.dom.attach_device(with_vlan(hostdev_interface(nic), 100))
    assert isinstance(refused.value.__cause__, UnsupportedError)
    assert "<vlan> on 0000:3d:00.0, which is not an SR-IOV VF" in str(refused.value.__cause__)
    assert len(rig.netlink.calls) == calls and rig.sysfs.driver_of(nic) == "e1000e"
    assert len(rig.dom.ledger) == 0


async def test_a_failover_pair_on_a_pool_starts_on_a_vf_of_the_pool(
    guest_paths: tuple[Path, Path], tmp_path: Path
) -> None:
    """A failover pair whose transient half is on a hostdev pool, at start. QEMU holds a
    failover primary back until the guest's virtio-net asks for it, so QEMU starts with the
    (fake) VF on its command line."""
    fake = FakeSysfs(tmp_path)
    fake.add_driver("vfio-pci")
    vfs = fake.add_pf(PF, PF_ADDRESS, vfs=2)
    netlink = FakeVFNetlink()
    netlink.add_pf(PF, vfs=2, mac=ORIGINAL.mac, vlan=ORIGINAL.vlan)
    root = StateRoot(tmp_path / "state")
    store = NetworkStore.for_host(root, fake.sysfs)
    store.define(
        parse_network(
            "<network><name>sriov</name><forward mode='hostdev' managed='yes'>"
            f"<pf dev='{PF}'/></forward><vlan><tag id='7'/></vlan></network>"
        )
    )
    mac = "52:54:00:70:00:05"
    devices = (
        f"<interface type='user'><mac address='{mac}'/><model type='virtio'/>"
        "<teaming type='persistent'/><alias name='ua-backup0'/></interface>\n"
        f"<interface type='network'><mac address='{mac}'/>"
        "<source network='sriov'/><teaming type='transient' persistent='ua-backup0'/>"
        "</interface>"
    )
    defn = parse_domain(guest_domain_xml(unique("pool"), devices, console=tmp_path / "sl"))
    dom = await Domain.start(
        defn, state_root=root, netlink=netlink, host_paths=HostPaths(sysfs=fake.sysfs)
    )
    try:
        (iface,) = [i for i in dom.live.interfaces if i.type is InterfaceType.HOSTDEV]
        assert iface.source is not None and iface.source.pci == vfs[0]
        assert iface.vlan is not None and iface.vlan.tags[0].id == 7  # the pool's VLAN
        entry = dom.ledger.get(iface.alias or "")
        assert entry is not None and entry.pool == ("sriov", str(vfs[0]))
        assert entry.saved_vf is not None and entry.saved_vf.vlan == ORIGINAL.vlan
        assert netlink.config(PF, 0) == VFConfig(MACAddress.parse(mac), 7)
        assert fake.driver_of(vfs[0]) == "vfio-pci"
        assert [(a.device, a.alias) for a in store.allocations()] == [(str(vfs[0]), "net0")]
    finally:
        await dom.stop(force=True)
    assert netlink.config(PF, 0) == ORIGINAL
    assert fake.driver_of(vfs[0]) == "ixgbevf"
    assert store.allocations() == []


async def test_a_pool_without_a_free_vf_names_the_interface_line(
    guest_paths: tuple[Path, Path], tmp_path: Path
) -> None:
    root = StateRoot(tmp_path / "state")
    NetworkStore(root).define(
        parse_network(
            "<network><name>empty</name><forward mode='hostdev'>"
            "<address type='pci' bus='0x3b' slot='0x10'/></forward></network>"
        )
    )
    other = root.domain("other")  # a domain whose start is under way holds the only VF
    other.make()
    note_start(other)
    await NetworkStore(root).allocate("empty", "other", "net0")
    devices = "<interface type='network'>\n<source network='empty'/>\n</interface>"
    xml = guest_domain_xml(unique("pool"), devices, console=tmp_path / "serial.log")
    line = xml.splitlines().index("<interface type='network'>") + 1
    defn = parse_domain(xml, source="dom.xml")
    with pytest.raises(ResourceBusyError) as busy:
        await Domain.start(defn, state_root=root, netlink=FakeVFNetlink())
    assert str(busy.value) == (f"dom.xml:{line}: network 'empty' has no free device left")


async def test_connecting_keeps_an_unassigned_hostdev(
    guest_paths: tuple[Path, Path], tmp_path: Path
) -> None:
    fake = FakeSysfs(tmp_path)
    fake.add_driver("vfio-pci")
    vfs = fake.add_pf(PF, PF_ADDRESS, vfs=2)
    unassigned = hostdev(vfs[1]).replace("</hostdev>", "<address type='unassigned'/></hostdev>")
    name = unique("unassigned")
    defn = parse_domain(guest_domain_xml(name, unassigned, console=tmp_path / "serial.log"))
    paths = HostPaths(sysfs=fake.sysfs)
    netlink = FakeVFNetlink()
    dom = await Domain.start(defn, state_root=tmp_path / "state", netlink=netlink, host_paths=paths)
    try:
        async with Domain.connect(
            name, state_root=tmp_path / "state", netlink=netlink, host_paths=paths
        ) as again:
            assert [e.alias for e in again.ledger] == ["hostdev0"]
        assert fake.driver_of(vfs[1]) == "vfio-pci"
    finally:
        await dom.stop(force=True)


async def test_an_unassigned_hostdev_is_held_but_not_given_to_the_guest(
    guest_paths: tuple[Path, Path], tmp_path: Path
) -> None:
    fake = FakeSysfs(tmp_path)
    fake.add_driver("vfio-pci")
    vfs = fake.add_pf(PF, PF_ADDRESS, vfs=2)
    netlink = FakeVFNetlink()
    netlink.add_pf(PF, vfs=2, mac=ORIGINAL.mac, vlan=ORIGINAL.vlan)
    unassigned = hostdev(vfs[1]).replace("</hostdev>", "<address type='unassigned'/></hostdev>")
    defn = parse_domain(
        guest_domain_xml(unique("unassigned"), unassigned, console=tmp_path / "serial.log")
    )
    dom = await Domain.start(
        defn, state_root=tmp_path / "state", netlink=netlink, host_paths=HostPaths(sysfs=fake.sysfs)
    )
    try:
        assert fake.driver_of(vfs[1]) == "vfio-pci"  # prepared and held…
        assert [e.alias for e in dom.ledger] == ["hostdev0"]
        assert "hostdev0" not in await dom.monitor.peripherals()  # …not given to the guest
        assert '<address type="unassigned"/>' in dom.xml()
    finally:
        await dom.stop(force=True)
    assert fake.driver_of(vfs[1]) == "ixgbevf" and fake.override_of(vfs[1]) is None
