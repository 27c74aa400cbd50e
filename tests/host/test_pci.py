"""PCI devices for VFIO: sysfs reads, assignment checks, vfio-pci binding and rebinding.

All against a fake sysfs tree whose fake kernel moves the driver links (this machine has no
IOMMU); see fakesysfs.py.
"""

from __future__ import annotations

import asyncio
import errno
import threading
import time
from pathlib import Path

import pytest

from qctl.errors import HostError, ResourceBusyError, SysfsError, UnsupportedError
from qctl.host import (
    KernelSysfsWriter,
    PCIDevice,
    Sysfs,
    bind_vfio,
    check_assignable,
    check_endpoint,
    check_iommu_group,
    check_not_in_use,
    rebind,
)
from qctl.types import PCIAddress

from .fakesysfs import FakeSysfs

NIC = PCIAddress.parse("0000:03:00.0")
MATE = PCIAddress.parse("0000:03:00.1")
BRIDGE = PCIAddress.parse("0000:00:1c.0")


@pytest.fixture
def fake(tmp_path: Path) -> FakeSysfs:
    return FakeSysfs(tmp_path)


def device(fake: FakeSysfs, address: PCIAddress = NIC) -> PCIDevice:
    return PCIDevice(address, sysfs=fake.sysfs)


@pytest.fixture
def nic(fake: FakeSysfs) -> PCIDevice:
    """An igb NIC alone in its IOMMU group, with vfio-pci loaded."""
    fake.add_driver("vfio-pci")
    fake.add_pci(NIC, device=0x1521, driver="igb", iommu_group=fake.new_group())
    fake.add_netdev("eth0", NIC)
    return device(fake)


# -- reads ---------------------------------------------------------------------------------------


def test_reads(fake: FakeSysfs) -> None:
    group = fake.new_group()
    fake.add_pci(NIC, vendor=0x8086, device=0x1521, cls=0x020000, driver="igb", iommu_group=group)
    fake.add_pci(MATE, driver=None, iommu_group=group)
    dev = device(fake)
    assert dev.exists()
    assert dev.path == fake.root / "bus/pci/devices/0000:03:00.0"
    assert (dev.vendor_id(), dev.device_id(), dev.class_code()) == (0x8086, 0x1521, 0x020000)
    assert dev.header_type() == 0 and dev.kind() == "endpoint" and dev.is_endpoint()
    assert dev.driver() == "igb"
    assert dev.driver_override() is None
    assert dev.iommu_group() == group
    assert dev.iommu_group_members() == [str(NIC), str(MATE)]
    assert not dev.is_vf() and dev.physfn() is None and dev.vf_index() is None
    assert device(fake, MATE).driver() is None
    fake.set_override(NIC, "vfio-pci")
    assert dev.driver_override() == "vfio-pci"


def test_missing_device(fake: FakeSysfs) -> None:
    dev = device(fake)
    assert not dev.exists()
    with pytest.raises(SysfsError, match=r"no PCI device 0000:03:00\.0 on this host") as info:
        dev.require()
    assert info.value.path == str(fake.root / "bus/pci/devices/0000:03:00.0")
    with pytest.raises(SysfsError) as info:
        dev.vendor_id()
    assert info.value.path == str(dev.path / "vendor")
    assert "No such file or directory (ENOENT)" in str(info.value)


def test_garbage_attribute_names_its_path(fake: FakeSysfs) -> None:
    fake.add_pci(NIC)
    (fake.device_dir(NIC) / "vendor").write_text("intel\n")
    with pytest.raises(SysfsError, match="unexpected content 'intel'") as info:
        device(fake).vendor_id()
    assert info.value.path == str(device(fake).path / "vendor")


# -- endpoint ------------------------------------------------------------------------------------


def test_bridge_is_not_an_endpoint(fake: FakeSysfs) -> None:
    fake.add_pci(BRIDGE, cls=0x060400, driver="pcieport", iommu_group=fake.new_group())
    fake.add_pci(NIC, iommu_group=fake.new_group())
    with pytest.raises(
        HostError,
        match=r"cannot assign 0000:00:1c\.0 to a guest: it is a PCI bridge "
        r"\(class 0x060400\), not an endpoint device",
    ):
        check_endpoint(device(fake, BRIDGE))
    check_endpoint(device(fake, NIC))
    with pytest.raises(HostError, match="not an endpoint"):
        check_assignable(device(fake, BRIDGE), managed=True)


@pytest.mark.parametrize(
    ("cls", "header", "config", "bridge_attrs", "kind"),
    [
        (0x020000, 0, True, True, "endpoint"),
        (0x060400, 1, True, True, "PCI bridge"),
        (0x060700, 2, True, True, "CardBus bridge"),
        # The header type decides over the class code…
        (0x060400, 0, True, True, "endpoint"),
        (0x020000, 1, True, True, "PCI bridge"),
        # …and without config space, the bridge-only attributes, then the class code.
        (0x060400, None, False, True, "PCI bridge"),
        (0x060400, None, False, False, "PCI bridge"),
        (0x060700, None, False, False, "CardBus bridge"),
        (0x020000, None, False, False, "endpoint"),
    ],
)
def test_kind(
    fake: FakeSysfs, cls: int, header: int | None, config: bool, bridge_attrs: bool, kind: str
) -> None:
    fake.add_pci(NIC, cls=cls, header_type=header, config=config, bridge_attrs=bridge_attrs)
    dev = device(fake)
    assert dev.kind() == kind
    assert dev.is_endpoint() == (kind == "endpoint")


# -- IOMMU group ---------------------------------------------------------------------------------


def test_no_iommu_group(fake: FakeSysfs) -> None:
    fake.add_driver("vfio-pci")
    fake.add_pci(NIC, driver="igb")
    dev = device(fake)
    assert dev.iommu_group() is None and dev.iommu_group_members() == []
    message = (
        r"cannot assign 0000:03:00\.0: no IOMMU group: is the IOMMU enabled "
        r"\(intel_iommu=on / amd_iommu=on"
    )
    with pytest.raises(UnsupportedError, match=message) as info:
        check_assignable(dev, managed=True)
    assert info.value.capability == "iommu"


def test_group_with_a_host_driver_is_not_viable(fake: FakeSysfs) -> None:
    group = fake.new_group()
    fake.add_pci(NIC, driver="ixgbe", iommu_group=group)
    fake.add_pci(MATE, driver="ixgbe", iommu_group=group)
    fake.add_pci("0000:03:00.2", driver="vfio-pci", iommu_group=group)
    fake.add_pci("0000:03:00.3", driver="e1000e", iommu_group=group)
    with pytest.raises(ResourceBusyError) as info:
        check_iommu_group(device(fake))
    assert str(info.value) == (
        f"cannot assign 0000:03:00.0: IOMMU group {group} is not viable, other devices of the "
        "group are used by host drivers: 0000:03:00.1 (bound to ixgbe), 0000:03:00.3 (bound "
        "to e1000e); bind them to vfio-pci or unbind them first"
    )


@pytest.mark.parametrize(
    ("mate_driver", "mate_class"),
    [
        (None, 0x020000),
        ("vfio-pci", 0x020000),
        ("pci-stub", 0x020000),
        ("mlx5_vfio_pci", 0x020000),
        ("pcieport", 0x060400),  # a bridge in the group does not matter
    ],
)
def test_viable_groups(fake: FakeSysfs, mate_driver: str | None, mate_class: int) -> None:
    group = fake.new_group()
    # The device itself may be on a host driver: only the others count.
    fake.add_pci(NIC, driver="ixgbe", iommu_group=group)
    fake.add_pci(MATE, driver=mate_driver, cls=mate_class, iommu_group=group)
    assert check_iommu_group(device(fake)) == group


# -- in use --------------------------------------------------------------------------------------


def test_in_use(fake: FakeSysfs) -> None:
    group = fake.new_group()
    fake.add_pci(NIC, driver="vfio-pci", iommu_group=group)
    fake.add_pci(MATE, driver="vfio-pci", iommu_group=group)
    dev = device(fake)
    check_not_in_use(dev, {})
    check_not_in_use(dev, {PCIAddress.parse("0000:04:00.0"): "domain other"})
    with pytest.raises(
        ResourceBusyError, match=r"^PCI device 0000:03:00\.0 is in use by domain web1$"
    ):
        check_not_in_use(dev, {NIC: "domain web1"})
    with pytest.raises(
        ResourceBusyError,
        match=rf"^PCI device 0000:03:00\.0 shares IOMMU group {group} with 0000:03:00\.1, "
        r"which is in use by domain web2$",
    ):
        check_assignable(dev, managed=False, in_use={MATE: "domain web2"})


def test_unmanaged_device_must_be_on_vfio(fake: FakeSysfs) -> None:
    fake.add_pci(NIC, driver="ixgbevf", iommu_group=fake.new_group())
    fake.add_pci(MATE, iommu_group=fake.new_group())
    with pytest.raises(
        HostError,
        match=r"^device 0000:03:00\.0 is bound to driver ixgbevf, not vfio-pci; "
        r"use managed='yes' or bind it yourself$",
    ):
        check_assignable(device(fake), managed=False)
    with pytest.raises(HostError, match=r"^device 0000:03:00\.1 is not bound to any driver, not"):
        check_assignable(device(fake, MATE), managed=False)
    # managed='yes' takes them as they are: binding is its job.
    check_assignable(device(fake), managed=True)
    check_assignable(device(fake, MATE), managed=True)


def test_unmanaged_device_on_vfio_passes(fake: FakeSysfs) -> None:
    group = fake.new_group()
    fake.add_pci(NIC, driver="vfio-pci", iommu_group=group)
    assert check_assignable(device(fake), managed=False) == group


# -- bind and rebind -----------------------------------------------------------------------------


async def test_bind_then_rebind(fake: FakeSysfs, nic: PCIDevice) -> None:
    assert fake.netdevs_of(NIC) == ["eth0"]
    assert await bind_vfio(nic) == "igb"
    assert fake.driver_of(NIC) == "vfio-pci"
    assert fake.override_of(NIC) == "vfio-pci"
    assert fake.netdevs_of(NIC) == []  # the host lost its interface
    assert fake.kernel.writes == [
        ("0000:03:00.0/driver_override", "vfio-pci"),
        ("drivers/igb/unbind", "0000:03:00.0"),
        ("drivers_probe", "0000:03:00.0"),
    ]
    fake.kernel.writes.clear()

    await rebind(nic, "igb")
    assert fake.driver_of(NIC) == "igb"
    assert fake.override_of(NIC) is None
    assert fake.netdevs_of(NIC) == ["eth0"]
    assert fake.kernel.writes == [
        ("0000:03:00.0/driver_override", "\n"),
        ("drivers/vfio-pci/unbind", "0000:03:00.0"),
        ("drivers_probe", "0000:03:00.0"),
    ]
    fake.kernel.writes.clear()
    await rebind(nic, "igb")  # idempotent
    assert fake.kernel.writes == []


async def test_rebind_binds_explicitly_when_probe_does_not(fake: FakeSysfs, nic: PCIDevice) -> None:
    await bind_vfio(nic)
    fake.kernel.no_autoprobe.add(NIC)
    fake.kernel.writes.clear()
    await rebind(nic, "igb")
    assert fake.driver_of(NIC) == "igb"
    assert fake.kernel.writes[-2:] == [
        ("drivers_probe", "0000:03:00.0"),
        ("drivers/igb/bind", "0000:03:00.0"),
    ]


async def test_rebind_failure_names_the_driver(fake: FakeSysfs, nic: PCIDevice) -> None:
    await bind_vfio(nic)
    fake.kernel.refuse_probe(NIC, "igb")
    with pytest.raises(SysfsError) as info:
        await rebind(nic, "igb")
    # The probe bound nothing, so the explicit bind was tried: its errno is the report.
    bind = fake.root / "bus/pci/drivers/igb/bind"
    assert str(info.value) == f"cannot write 0000:03:00.0 to {bind}: Invalid argument (EINVAL)"
    assert info.value.path == str(bind)
    assert fake.driver_of(NIC) is None and fake.override_of(NIC) is None


async def test_already_on_vfio_is_left_alone(fake: FakeSysfs) -> None:
    fake.add_pci(NIC, driver="vfio-pci", iommu_group=fake.new_group())
    dev = device(fake)
    assert await bind_vfio(dev) == "vfio-pci"
    await rebind(dev, "vfio-pci")
    assert fake.kernel.writes == []
    assert fake.driver_of(NIC) == "vfio-pci"


async def test_unbound_device(fake: FakeSysfs) -> None:
    fake.add_driver("vfio-pci")
    fake.add_pci(NIC, iommu_group=fake.new_group())
    dev = device(fake)
    assert await bind_vfio(dev) is None
    assert fake.driver_of(NIC) == "vfio-pci"
    assert [path for path, _ in fake.kernel.writes] == [
        "0000:03:00.0/driver_override",
        "drivers_probe",
    ]
    await rebind(dev, None)
    assert fake.driver_of(NIC) is None
    assert fake.override_of(NIC) is None


async def test_vfio_pci_not_loaded(fake: FakeSysfs) -> None:
    fake.add_pci(NIC, driver="igb", iommu_group=fake.new_group())
    with pytest.raises(UnsupportedError, match=r"the vfio-pci driver is not loaded \(modprobe"):
        await bind_vfio(device(fake))
    assert fake.kernel.writes == []
    assert fake.driver_of(NIC) == "igb"


async def test_rebind_leaves_a_foreign_driver_alone(fake: FakeSysfs, nic: PCIDevice) -> None:
    with pytest.raises(HostError, match=r"it is bound to igb, not vfio-pci; leaving it alone"):
        await rebind(nic, "e1000e")
    assert fake.kernel.writes == []


# -- rollback ------------------------------------------------------------------------------------


def assert_untouched(fake: FakeSysfs) -> None:
    assert fake.driver_of(NIC) == "igb"
    assert fake.override_of(NIC) is None
    assert fake.netdevs_of(NIC) == ["eth0"]


async def test_override_write_fails(fake: FakeSysfs, nic: PCIDevice) -> None:
    fake.kernel.fail("0000:03:00.0/driver_override", errno.EACCES)
    with pytest.raises(SysfsError) as info:
        await bind_vfio(nic)
    assert str(info.value) == (
        f"cannot write vfio-pci to {nic.path}/driver_override: Permission denied (EACCES)"
    )
    assert info.value.path == f"{nic.path}/driver_override"
    assert_untouched(fake)


async def test_unbind_fails(fake: FakeSysfs, nic: PCIDevice) -> None:
    fake.kernel.fail("drivers/igb/unbind", errno.EBUSY)
    with pytest.raises(SysfsError, match=r"drivers/igb/unbind: Device or resource busy \(EBUSY\)"):
        await bind_vfio(nic)
    assert_untouched(fake)
    assert fake.kernel.writes[-1] == ("0000:03:00.0/driver_override", "\n")


async def test_probe_fails_midway(fake: FakeSysfs, nic: PCIDevice) -> None:
    """Unbound from igb, then drivers_probe fails: the override goes, igb comes back."""
    fake.kernel.fail("drivers_probe", errno.EIO)
    with pytest.raises(SysfsError, match=r"drivers_probe: Input/output error \(EIO\)") as info:
        await bind_vfio(nic)
    assert info.value.path == str(fake.root / "bus/pci/drivers_probe")
    assert_untouched(fake)
    assert fake.kernel.writes == [
        ("0000:03:00.0/driver_override", "vfio-pci"),
        ("drivers/igb/unbind", "0000:03:00.0"),
        ("drivers_probe", "0000:03:00.0"),  # failed
        ("0000:03:00.0/driver_override", "\n"),  # rollback: override cleared,
        ("drivers_probe", "0000:03:00.0"),  # igb rebound
    ]


async def test_vfio_refuses_the_device(fake: FakeSysfs, nic: PCIDevice) -> None:
    fake.kernel.refuse_probe(NIC, "vfio-pci")
    with pytest.raises(
        SysfsError, match=r"after probing it is bound to no driver; see the kernel log"
    ) as info:
        await bind_vfio(nic)
    assert info.value.path == f"{nic.path}/driver"
    assert_untouched(fake)


async def test_earlier_override_is_restored(fake: FakeSysfs, nic: PCIDevice) -> None:
    fake.set_override(NIC, "igb")
    fake.kernel.fail("drivers_probe")
    with pytest.raises(SysfsError):
        await bind_vfio(nic)
    assert fake.override_of(NIC) == "igb"
    assert fake.driver_of(NIC) == "igb"


async def test_rollback_failure_is_a_note(fake: FakeSysfs, nic: PCIDevice) -> None:
    fake.kernel.fail("drivers_probe", errno.EIO, times=2)
    fake.kernel.fail("drivers/igb/bind", errno.ENODEV)
    with pytest.raises(SysfsError, match=r"drivers_probe: Input/output error") as info:
        await bind_vfio(nic)
    notes = getattr(info.value, "__notes__", [])
    assert len(notes) == 1
    assert notes[0].startswith("rollback of rebinding 0000:03:00.0 to igb also failed: SysfsError")
    assert fake.driver_of(NIC) is None  # what really happened; the note tells the user


async def test_cancelled_bind_is_undone(fake: FakeSysfs, nic: PCIDevice) -> None:
    """Cancelled while the worker thread writes: it finishes, then the bind is undone."""
    reached, release = threading.Event(), threading.Event()

    def hold(path: str, data: str) -> None:
        if path == "drivers/igb/unbind":
            reached.set()
            release.wait(5)

    fake.kernel.before_write = hold
    task = asyncio.create_task(bind_vfio(nic))
    await asyncio.to_thread(reached.wait, 5)
    task.cancel()
    await asyncio.sleep(0.05)
    assert not task.done()  # still waiting for the thread, not abandoning it
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert_untouched(fake)
    assert fake.kernel.writes[-3:] == [
        ("0000:03:00.0/driver_override", "\n"),
        ("drivers/vfio-pci/unbind", "0000:03:00.0"),
        ("drivers_probe", "0000:03:00.0"),
    ]


async def test_timeout_around_bind(fake: FakeSysfs, nic: PCIDevice) -> None:
    """asyncio.timeout still turns the cancellation into TimeoutError."""

    def slow(path: str, data: str) -> None:
        time.sleep(0.1)  # each write outlasts the whole timeout

    fake.kernel.before_write = slow
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await bind_vfio(nic)
    assert_untouched(fake)


# -- the real writer -----------------------------------------------------------------------------


def test_kernel_writer(tmp_path: Path) -> None:
    target = tmp_path / "attr"
    target.write_text("old-and-long")
    sysfs = Sysfs(root=tmp_path, writer=KernelSysfsWriter())
    sysfs.write(target, "new")
    # No O_TRUNC: sysfs attributes are not files; a plain file shows the write in place.
    assert target.read_text() == "new-and-long"
    with pytest.raises(SysfsError) as info:
        sysfs.write(tmp_path / "missing", "0000:03:00.0")
    assert str(info.value) == (
        f"cannot write 0000:03:00.0 to {tmp_path / 'missing'}: No such file or directory (ENOENT)"
    )
    assert info.value.path == str(tmp_path / "missing")
