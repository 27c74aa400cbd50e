"""VFIO devices on the real QEMU, with a fake sysfs tree and a fake PF for the hardware.

This machine has no IOMMU, VFIO or SR-IOV: the PF and its VFs exist only in a fake sysfs
tree (with a fake kernel behind its writes) and a fake netlink PF. QEMU is real, so its
refusal of a vfio-pci device that does not exist is a real rollback case. Where a test
needs an attach to succeed, ``device_add`` is made to report success without QEMU (the one
QMP step faked), and everything around it is real.
"""

from __future__ import annotations

import asyncio
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
    MACAddress,
    PCIAddress,
    ProcessError,
    ResourceBusyError,
    parse_domain,
    parse_network,
)
from qctl.host import PCIDevice, VFConfig

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
    assert "hostdev" not in rig.dom.directory.status_file.read_text()
    assert not await rig.dom.monitor.peripherals() & {"hostdev0"}


async def test_attached_vf_is_recorded_and_detach_through_hostdev_path_clears_it(
    rig: Rig,
) -> None:
    vf = rig.vfs[0]
    fake_device_add(rig.dom)
    live = await rig.dom.attach_device(hostdev_interface(vf))
    entry = rig.dom.ledger.get(live.alias or "")
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
    with pytest.raises(HotplugError) as busy:
        await rig.dom.attach_device(hostdev_interface(vf, mac="52:54:00:70:00:02"))
    assert isinstance(busy.value.__cause__, ResourceBusyError)
    assert f"{rig.dom.name}/{first.alias}" in str(busy.value.__cause__)

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
        assert await rig.dom.detach_device(alias or "") is DetachResult.DETACHED
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
