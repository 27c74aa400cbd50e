"""SR-IOV VFs: discovery in a fake sysfs, admin MAC/VLAN save → apply → restore through a fake
netlink, and the real netlink facade's VF requests (message shape, and the kernel's refusal
on a veth, which has no VFs).
"""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

import pytest
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from support import unique

from qctl.errors import HostError, NetlinkError
from qctl.host import (
    Netlink,
    PCIDevice,
    SavedVFConfig,
    VFConfig,
    VirtualFunction,
    apply_vf_config,
    bind_vfio,
    check_assignable,
    find_vf,
    list_vfs,
    rebind,
    restore_vf_config,
    save_vf_config,
)
from qctl.types import MACAddress, PCIAddress

from .fakesysfs import ZERO_MAC, FakeSysfs, FakeVFNetlink, VFCall, vf_address

PF = PCIAddress.parse("0000:03:00.0")
GUEST_MAC = MACAddress.parse("52:54:00:12:34:56")
ALT_ZERO = "02:00:00:00:00:00"


@pytest.fixture
def fake(tmp_path: Path) -> FakeSysfs:
    return FakeSysfs(tmp_path)


# -- discovery -----------------------------------------------------------------------------------


def test_list_vfs(fake: FakeSysfs) -> None:
    vfs = fake.add_pf("eth0", PF, vfs=12)
    found = list_vfs("eth0", sysfs=fake.sysfs)
    # By VF number, not by name: virtfn10 comes after virtfn9.
    assert found == [VirtualFunction("eth0", n, vfs[n]) for n in range(12)]
    assert found[10].address == PCIAddress.parse("0000:03:11.2")
    assert str(found[1]) == "VF 1 of eth0 (0000:03:10.1)"


def test_list_vfs_of_a_pf_without_vfs(fake: FakeSysfs) -> None:
    fake.add_pf("eth0", PF, vfs=0)
    assert list_vfs("eth0", sysfs=fake.sysfs) == []


def test_list_vfs_refuses_what_is_not_a_pf(fake: FakeSysfs) -> None:
    fake.add_pci("0000:05:00.0", driver="e1000e")
    fake.add_netdev("eno1", "0000:05:00.0")
    (fake.root / "class/net/br0").mkdir()  # a virtual interface: no device link
    with pytest.raises(HostError, match=r"^no network interface eth9 on this host$"):
        list_vfs("eth9", sysfs=fake.sysfs)
    with pytest.raises(HostError, match=r"^eno1 \(0000:05:00\.0\) is not an SR-IOV physical"):
        list_vfs("eno1", sysfs=fake.sysfs)
    with pytest.raises(HostError, match=r"^br0 is not a PCI network device"):
        list_vfs("br0", sysfs=fake.sysfs)


def test_find_vf(fake: FakeSysfs) -> None:
    vfs = fake.add_pf("eth0", PF, vfs=3)
    assert find_vf(vfs[2], sysfs=fake.sysfs) == VirtualFunction("eth0", 2, vfs[2])
    dev = PCIDevice(vfs[2], sysfs=fake.sysfs)
    assert dev.is_vf() and dev.physfn() == PF and dev.vf_index() == 2
    assert PCIDevice(PF, sysfs=fake.sysfs).virtfns() == list(enumerate(vfs))
    assert dev.net_names() == ["eth0v2"]
    with pytest.raises(HostError, match=r"^PCI device 0000:03:00\.0 is not an SR-IOV virtual"):
        find_vf(PF, sysfs=fake.sysfs)
    with pytest.raises(HostError, match=r"no PCI device 0000:09:00\.0"):
        find_vf(PCIAddress.parse("0000:09:00.0"), sysfs=fake.sysfs)


def test_find_vf_needs_the_pf_interface(fake: FakeSysfs) -> None:
    vfs = fake.add_pf("eth0", PF, vfs=1)
    fake._unbind(PF)  # PF driver unloaded: no eth0
    with pytest.raises(
        HostError, match=r"^the PF 0000:03:00\.0 of VF 0000:03:10\.0 has no network interface"
    ):
        find_vf(vfs[0], sysfs=fake.sysfs)


def test_vfs_in_one_group(fake: FakeSysfs) -> None:
    vfs = fake.add_pf("eth0", PF, vfs=2, group_per_vf=False)
    dev = PCIDevice(vfs[0], sysfs=fake.sysfs)
    assert dev.iommu_group_members() == [str(PF), str(vfs[0]), str(vfs[1])]
    with pytest.raises(HostError, match=r"0000:03:00\.0 \(bound to ixgbe\), 0000:03:10\.1"):
        check_assignable(dev, managed=True)


# -- MAC/VLAN through the PF ---------------------------------------------------------------------


@pytest.fixture
def links() -> FakeVFNetlink:
    nl = FakeVFNetlink()
    nl.add_pf("eth0", vfs=4)
    return nl


VF1 = VirtualFunction("eth0", 1, vf_address(PF, 1))


async def test_save_apply_restore(links: FakeVFNetlink) -> None:
    links.pfs["eth0"].vfs[1] = VFConfig(MACAddress.parse("aa:bb:cc:00:00:01"), 7)
    saved = await save_vf_config(VF1, links)
    assert saved == SavedVFConfig("eth0", 1, MACAddress.parse("aa:bb:cc:00:00:01"), 7)

    await apply_vf_config(VF1, links, mac=GUEST_MAC, vlan=42)
    assert links.config("eth0", 1) == VFConfig(GUEST_MAC, 42)

    await restore_vf_config(saved, links)
    assert links.config("eth0", 1) == VFConfig(MACAddress.parse("aa:bb:cc:00:00:01"), 7)
    assert links.calls == [
        VFCall("get", "eth0", 1),
        VFCall("set", "eth0", 1, mac=str(GUEST_MAC)),
        VFCall("set", "eth0", 1, vlan=42),
        VFCall("set", "eth0", 1, mac="aa:bb:cc:00:00:01"),
        VFCall("set", "eth0", 1, vlan=7),
    ]
    # The other VFs were never touched.
    assert all(links.config("eth0", n) == VFConfig(ZERO_MAC, 0) for n in (0, 2, 3))


async def test_apply_without_vlan_leaves_it(links: FakeVFNetlink) -> None:
    links.pfs["eth0"].vfs[1] = VFConfig(ZERO_MAC, 9)
    await apply_vf_config(VF1, links, mac=GUEST_MAC)
    assert links.config("eth0", 1) == VFConfig(GUEST_MAC, 9)
    assert links.calls == [VFCall("set", "eth0", 1, mac=str(GUEST_MAC))]


async def test_apply_refuses_a_bad_vlan(links: FakeVFNetlink) -> None:
    with pytest.raises(HostError, match=r"cannot set the VLAN of VF 1 of eth0 .* to 4096: a VLAN"):
        await apply_vf_config(VF1, links, vlan=4096)
    assert links.calls == []


async def test_down_pf_is_refused(links: FakeVFNetlink) -> None:
    links.pfs["eth0"].up = False
    with pytest.raises(HostError, match=r"eth0 is down, and a down PF does not pass settings on"):
        await save_vf_config(VF1, links)
    with pytest.raises(HostError, match=r"there is no network interface eth7"):
        await save_vf_config(VirtualFunction("eth7", 0, PF), links)
    assert links.calls == []


async def test_missing_vf(links: FakeVFNetlink) -> None:
    with pytest.raises(NetlinkError) as info:
        await save_vf_config(VirtualFunction("eth0", 9, PF), links)
    assert info.value.errno == errno.ENODEV


async def test_zero_mac_refused_is_retried(links: FakeVFNetlink) -> None:
    links.refuse_zero_mac = True
    saved = await save_vf_config(VF1, links)
    await apply_vf_config(VF1, links, mac=GUEST_MAC)
    await restore_vf_config(saved, links)
    assert links.calls[-3:] == [
        VFCall("set", "eth0", 1, mac="00:00:00:00:00:00"),
        VFCall("set", "eth0", 1, mac=ALT_ZERO),
        VFCall("set", "eth0", 1, vlan=0),
    ]
    assert str(links.config("eth0", 1).mac) == ALT_ZERO


async def test_other_mac_errors_are_not_retried(links: FakeVFNetlink) -> None:
    links.fail(lambda call: call.mac is not None, errno.EINVAL)
    with pytest.raises(NetlinkError):
        await apply_vf_config(VF1, links, mac=GUEST_MAC, vlan=5)
    assert links.calls == [VFCall("set", "eth0", 1, mac=str(GUEST_MAC))]


async def test_locked_vlan(links: FakeVFNetlink) -> None:
    """EPERM on a VLAN: an error when we asked for one, nothing to clear when restoring 0."""
    links.locked_vlan = True
    saved = await save_vf_config(VF1, links)
    with pytest.raises(NetlinkError) as info:
        await apply_vf_config(VF1, links, mac=GUEST_MAC, vlan=10)
    assert info.value.errno == errno.EPERM
    await restore_vf_config(saved, links)
    assert links.config("eth0", 1) == VFConfig(ZERO_MAC, 0)
    with pytest.raises(NetlinkError):
        await restore_vf_config(SavedVFConfig("eth0", 1, ZERO_MAC, 10), links)


async def test_restore_tries_both_and_keeps_the_first_error(links: FakeVFNetlink) -> None:
    saved = await save_vf_config(VF1, links)
    await apply_vf_config(VF1, links, mac=GUEST_MAC, vlan=3)
    links.fail(lambda call: call.mac is not None, errno.EIO)
    links.fail(lambda call: call.vlan is not None, errno.EBUSY)
    with pytest.raises(NetlinkError) as info:
        await restore_vf_config(saved, links)
    assert info.value.errno == errno.EIO
    assert info.value.__notes__ == [
        "rollback of restoring the VLAN of VF 1 of eth0 also failed: NetlinkError: "
        "injected failure of VFCall(op='set', pf='eth0', vf=1, mac=None, vlan=0)"
    ]
    # With the MAC failing alone, the VLAN is still restored.
    links.fail(lambda call: call.mac is not None, errno.EIO)
    with pytest.raises(NetlinkError):
        await restore_vf_config(saved, links)
    assert links.config("eth0", 1) == VFConfig(GUEST_MAC, 0)


# -- a whole hostdev interface, host side --------------------------------------------------------


async def test_hostdev_interface_round_trip(fake: FakeSysfs, links: FakeVFNetlink) -> None:
    """What the driver does for <interface type='hostdev' managed='yes'>, and its undo."""
    fake.add_driver("vfio-pci")
    vfs = fake.add_pf("eth0", PF, vfs=4)
    links.pfs["eth0"].vfs[1] = VFConfig(ZERO_MAC, 0)

    vf = find_vf(vfs[1], sysfs=fake.sysfs)
    dev = PCIDevice(vf.address, sysfs=fake.sysfs)
    check_assignable(dev, managed=True)
    saved = await save_vf_config(vf, links)
    original = await bind_vfio(dev)
    await apply_vf_config(vf, links, mac=GUEST_MAC, vlan=100)
    assert (original, fake.driver_of(vf.address)) == ("ixgbevf", "vfio-pci")
    assert links.config("eth0", 1) == VFConfig(GUEST_MAC, 100)
    assert fake.netdevs_of(vf.address) == []

    await restore_vf_config(saved, links)
    await rebind(dev, original)
    assert fake.driver_of(vf.address) == "ixgbevf"
    assert fake.override_of(vf.address) is None
    assert fake.netdevs_of(vf.address) == ["eth0v1"]
    assert links.config("eth0", 1) == VFConfig(ZERO_MAC, 0)


# -- the real facade -----------------------------------------------------------------------------


def pf_message(index: int, vfs: list[tuple[str, int]]) -> Any:
    """What the kernel answers RTM_GETLINK with RTEXT_FILTER_VF, encoded then decoded."""
    infos = [
        (
            "IFLA_VF_INFO",
            {
                "attrs": [
                    ("IFLA_VF_MAC", {"vf": n, "mac": mac}),
                    ("IFLA_VF_VLAN", {"vf": n, "vlan": vlan, "qos": 0}),
                ]
            },
        )
        for n, (mac, vlan) in enumerate(vfs)
    ]
    msg = ifinfmsg()
    msg["index"] = index
    msg["attrs"] = [
        ("IFLA_IFNAME", "eth0"),
        ("IFLA_NUM_VF", len(vfs)),
        ("IFLA_VFINFO_LIST", {"attrs": infos}),
    ]
    msg.encode()
    decoded = ifinfmsg(msg.data)
    decoded.decode()
    return decoded


class ScriptedIPR:
    """Stands for pyroute2's AsyncIPRoute: records link() calls, answers with a PF message."""

    def __init__(self, reply: Any) -> None:
        self.reply = reply
        self.requests: list[tuple[str, dict[str, Any]]] = []

    async def link(self, command: str, **kwargs: Any) -> list[Any]:
        self.requests.append(
            (command, {k: dict(v) if isinstance(v, dict) else v for k, v in kwargs.items()})
        )
        return [self.reply] if command == "get" else []

    def close(self) -> None:
        pass


async def test_facade_reads_and_sets_vf_config() -> None:
    ipr = ScriptedIPR(pf_message(5, [("00:00:00:00:00:00", 0), ("52:54:00:00:00:01", 42)]))
    nl = Netlink()
    nl._ipr = ipr  # the socket is opened lazily: put the script in its place
    assert await nl.get_vf_config("eth0", 1) == VFConfig(MACAddress.parse("52:54:00:00:00:01"), 42)
    assert await nl.get_vf_config("eth0", 0) == VFConfig(ZERO_MAC, 0)
    with pytest.raises(NetlinkError) as info:
        await nl.get_vf_config("eth0", 2)
    assert info.value.errno == errno.ENODEV
    assert str(info.value) == (
        "cannot read the configuration of VF 2 of eth0: eth0 has no VF 2 (it has 2) (ENODEV)"
    )
    ipr.requests.clear()

    await nl.set_vf_config("eth0", 1, mac=GUEST_MAC, vlan=100)
    assert ipr.requests == [
        ("get", {"ifname": "eth0"}),
        ("set", {"index": 5, "vf": {"vf": 1, "mac": str(GUEST_MAC)}}),
        ("set", {"index": 5, "vf": {"vf": 1, "vlan": 100}}),
    ]
    ipr.requests.clear()
    await nl.get_vf_config("eth0", 1)
    assert ipr.requests[-1] == ("get", {"index": 5, "ext_mask": 1})  # RTEXT_FILTER_VF
    await nl.aclose()


async def test_facade_refuses_a_bad_vlan_before_asking() -> None:
    async with Netlink() as nl:
        with pytest.raises(NetlinkError, match=r"a VLAN id is 0 to 4095 \(EINVAL\)") as info:
            await nl.set_vf_config("eth0", 0, vlan=5000)
        assert info.value.errno == errno.EINVAL
        assert nl._ipr is None  # the kernel was never asked


async def test_facade_against_the_kernel(netlink: Netlink) -> None:
    """A veth has no VFs: the kernel refuses VF settings with EOPNOTSUPP, which proves the
    requests reach it well-formed and its errors come back translated."""
    port, peer = unique("qvf"), unique("qvp")
    await netlink.create_veth(port, peer)
    try:
        with pytest.raises(NetlinkError) as info:
            await netlink.set_vf_config(port, 0, mac=GUEST_MAC)
        assert info.value.errno == errno.EOPNOTSUPP
        assert str(info.value).startswith(
            f"cannot set the MAC address of VF 0 of {port} to {GUEST_MAC}: "
        )
        with pytest.raises(NetlinkError) as info:
            await netlink.set_vf_config(port, 0, vlan=10)
        assert info.value.errno == errno.EOPNOTSUPP
        with pytest.raises(NetlinkError) as info:
            await netlink.get_vf_config(port, 0)
        assert info.value.errno == errno.EOPNOTSUPP
        assert f"{port} reports no SR-IOV VFs" in str(info.value)
    finally:
        await netlink.delete_link(port)
    with pytest.raises(NetlinkError) as info:
        await netlink.get_vf_config(port, 0)
    assert info.value.errno == errno.ENODEV
    with pytest.raises(NetlinkError) as info:
        await netlink.set_vf_config(port, 0, mac=GUEST_MAC)
    assert info.value.errno == errno.ENODEV
    assert str(info.value) == f"cannot configure VF 0 of {port}: No such device (ENODEV)"
