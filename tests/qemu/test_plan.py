"""Planning (qctl.qemu.plan): validation against caps, MACs, aliases and addresses."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from qctl.caps import QEMUCaps
from qctl.conf import DomainDef, InterfaceDef, InterfaceType, parse_domain
from qctl.errors import UnsupportedError, ValidationError
from qctl.qemu.command import Features
from qctl.qemu.plan import assign_macs, check_support, features_from_caps, plan, random_mac
from qctl.types import MACAddress, PCIAddress

CAPS_FILE = Path(__file__).parent / "data" / "argv" / "qemu-7.2.caps.json"


@pytest.fixture(scope="module")
def caps() -> QEMUCaps:
    return QEMUCaps.from_json(CAPS_FILE.read_text())


def domain(devices: str = "", *, machine: str = "pc", kind: str = "qemu") -> DomainDef:
    return parse_domain(
        f"<domain type='{kind}'><name>t</name><memory unit='MiB'>64</memory>"
        f"<os><type arch='x86_64' machine='{machine}'>hvm</type></os>"
        f"<devices>{devices}</devices></domain>"
    )


def mac(text: str) -> MACAddress:
    return MACAddress.parse(text)


def macs(*texts: str) -> Callable[[], MACAddress]:
    source: Iterator[str] = iter(texts)
    return lambda: mac(next(source))


USER = "<interface type='user'><model type='virtio'/></interface>"


def user(mac_text: str) -> str:
    return f"<interface type='user'><mac address='{mac_text}'/><model type='virtio'/></interface>"


# -- MAC addresses -----------------------------------------------------------------------------


def test_macs_fill_only_what_is_missing() -> None:
    defn = assign_macs(
        domain(USER + user("52:54:00:00:00:09") + USER),
        macs("52:54:00:00:00:01", "52:54:00:00:00:02"),
    )
    assert [str(i.mac) for i in defn.interfaces] == [
        "52:54:00:00:00:01",
        "52:54:00:00:00:09",
        "52:54:00:00:00:02",
    ]


def test_macs_never_duplicate_an_existing_or_new_one() -> None:
    source = macs(
        "52:54:00:00:00:09",  # taken by the explicit NIC: drawn again
        "52:54:00:00:00:01",
        "52:54:00:00:00:01",  # just given to the first NIC: drawn again
        "52:54:00:00:00:02",
    )
    defn = assign_macs(domain(USER + user("52:54:00:00:00:09") + USER), source)
    assert [str(i.mac) for i in defn.interfaces] == [
        "52:54:00:00:00:01",
        "52:54:00:00:00:09",
        "52:54:00:00:00:02",
    ]


def test_random_macs_are_local_qemu_range() -> None:
    seen = {random_mac() for _ in range(64)}
    assert all(str(m).startswith("52:54:00:") for m in seen)
    assert len(seen) > 1


def test_plan_is_deterministic_with_injected_macs(caps: QEMUCaps) -> None:
    xml = USER + "<interface type='user'/>" + USER

    def counter() -> Callable[[], MACAddress]:
        return macs("52:54:00:00:00:01", "52:54:00:00:00:02", "52:54:00:00:00:03")

    first = plan(domain(xml, machine="q35"), caps, new_mac=counter())
    again = plan(domain(xml, machine="q35"), caps, new_mac=counter())
    assert first == again
    assert [str(i.mac) for i in first.interfaces] == [
        "52:54:00:00:00:01",
        "52:54:00:00:00:02",
        "52:54:00:00:00:03",
    ]


def test_plan_fills_aliases_and_addresses(caps: QEMUCaps) -> None:
    planned = plan(domain(USER + USER), caps, new_mac=random_mac)
    assert [(i.alias, i.address) for i in planned.interfaces] == [
        ("net0", PCIAddress(0, 0, 2, 0)),
        ("net1", PCIAddress(0, 0, 3, 0)),
    ]
    assert all(i.mac is not None for i in planned.interfaces)


def test_plan_does_not_change_its_input(caps: QEMUCaps) -> None:
    defn = domain(USER)
    before = dataclasses.replace(defn)
    plan(defn, caps)
    assert defn == before and defn.interfaces[0].mac is None


# -- refusals ----------------------------------------------------------------------------------


def test_plan_raises_the_first_validation_problem(caps: QEMUCaps) -> None:
    address = "<address type='pci' domain='0x0000' bus='0x00' slot='0x03' function='0x0'/>"
    nic = f"<interface type='user'><model type='virtio'/>{address}</interface>"
    one = domain(nic)  # a document with both NICs would be refused already when read
    defn = dataclasses.replace(
        one, devices=dataclasses.replace(one.devices, items=one.devices.items * 2)
    )
    with pytest.raises(ValidationError, match=r"guest PCI address 0000:00:03\.0 is already used"):
        plan(defn, caps)


def test_kvm_needs_kvm(caps: QEMUCaps) -> None:
    no_kvm = dataclasses.replace(caps, kvm_present=False, kvm_enabled=False)
    with pytest.raises(UnsupportedError, match="no usable KVM") as info:
        check_support(domain(kind="kvm"), no_kvm)
    assert info.value.capability == "kvm"
    check_support(domain(kind="qemu"), no_kvm)


def test_unknown_machine(caps: QEMUCaps) -> None:
    with pytest.raises(UnsupportedError, match="machine type 'virt' is not known") as info:
        check_support(domain(machine="virt"), caps)
    assert info.value.capability == "machine"
    check_support(domain(machine="pc-q35-7.2"), caps)


def test_q35_needs_root_ports(caps: QEMUCaps) -> None:
    without = dataclasses.replace(caps, qom_types=caps.qom_types - {"pcie-root-port"})
    with pytest.raises(UnsupportedError, match="pcie-root-port") as info:
        check_support(domain(machine="q35"), without)
    assert info.value.capability == "pcie_root_port"


def test_unsupported_controller_model(caps: QEMUCaps) -> None:
    xml = "<controller type='pci' index='1' model='dmi-to-pci-bridge'/>"
    with pytest.raises(UnsupportedError, match="'dmi-to-pci-bridge'") as info:
        check_support(domain(xml, machine="q35"), caps)
    assert info.value.capability == "pci-controller"


HOSTDEV_NIC = (
    "<interface type='hostdev' managed='yes'><mac address='52:54:00:00:00:01'/><source>"
    "<address type='pci' domain='0x0000' bus='0x03' slot='0x07' function='0x1'/></source>"
    "{teaming}</interface>"
)
HOSTDEV = (
    "<hostdev mode='subsystem' type='pci' managed='yes'><source>"
    "<address domain='0x0000' bus='0x05' slot='0x00' function='0x0'/></source></hostdev>"
)


def test_vfio_needed_for_passthrough(caps: QEMUCaps) -> None:
    without = dataclasses.replace(caps, qom_types=caps.qom_types - {"vfio-pci"})
    with pytest.raises(UnsupportedError, match="no vfio-pci device") as info:
        check_support(domain(HOSTDEV_NIC.format(teaming="")), without)
    assert info.value.capability == "vfio_pci"
    with pytest.raises(UnsupportedError, match="<hostdev> needs the vfio-pci") as info:
        check_support(domain(HOSTDEV), without)
    assert info.value.capability == "vfio_pci"


def test_transient_teaming_needs_failover_pair_id(caps: QEMUCaps) -> None:
    props = {d: dict(p) for d, p in caps.device_properties.items()}
    del props["vfio-pci"]["failover_pair_id"]
    without = dataclasses.replace(caps, device_properties=props)
    virtio = (
        "<interface type='user'><mac address='52:54:00:00:00:01'/><model type='virtio'/>"
        "<teaming type='persistent'/><alias name='ua-p'/></interface>"
    )
    xml = virtio + HOSTDEV_NIC.format(teaming="<teaming type='transient' persistent='ua-p'/>")
    check_support(domain(xml), caps)
    with pytest.raises(UnsupportedError, match="needs failover_pair_id") as info:
        check_support(domain(xml), without)
    assert info.value.capability == "failover_pair_id"


def test_usb_hostdev_interface_is_refused(caps: QEMUCaps) -> None:
    usb = InterfaceDef(type=InterfaceType.HOSTDEV, alias="hostdev0")
    defn = dataclasses.replace(
        domain(), devices=dataclasses.replace(domain().devices, items=(usb,))
    )
    with pytest.raises(UnsupportedError, match="USB host device") as info:
        check_support(defn, caps)
    assert info.value.capability == "usb-hostdev-interface"
    assert "interface hostdev0" in str(info.value)


def test_features_from_caps(caps: QEMUCaps) -> None:
    assert features_from_caps(caps) == Features(json_netdev=True, json_device=True, failover=True)
    bare = QEMUCaps()
    assert features_from_caps(bare) == Features(False, False, False)
