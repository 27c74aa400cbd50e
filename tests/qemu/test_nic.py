"""NIC properties (qctl.qemu.nic): the dicts behind -netdev/-device and netdev_add/device_add,
in libvirt 9.0's order (tests/qemu/test_libvirt_parity.py checks them against libvirt)."""

from __future__ import annotations

import dataclasses

import pytest

from qctl.conf import (
    DomainDef,
    HostdevDef,
    InterfaceDef,
    InterfaceDriverDef,
    InterfaceSourceDef,
    InterfaceType,
    TeamingDef,
    TeamingType,
    parse_domain,
)
from qctl.errors import UnsupportedError
from qctl.qemu.nic import (
    DEFAULT_MODEL,
    NICResources,
    device_driver,
    hostdev_props,
    interface_device_props,
    netdev_props,
    pci_addr,
)
from qctl.types import MACAddress, PCIAddress

MAC = MACAddress.parse("52:54:00:12:34:56")
VF = PCIAddress.parse("0000:03:07.1")


def q35() -> DomainDef:
    return parse_domain(
        "<domain type='kvm'><name>t</name><memory unit='MiB'>64</memory>"
        "<os><type arch='x86_64' machine='q35'>hvm</type></os><devices/></domain>"
    )


def pc() -> DomainDef:
    return dataclasses.replace(q35(), os=dataclasses.replace(q35().os, machine="pc"))


def iface(**fields: object) -> InterfaceDef:
    base: dict[str, object] = {"type": InterfaceType.ETHERNET, "alias": "net0", "mac": MAC}
    base.update(fields)
    return InterfaceDef(**base)  # type: ignore[arg-type]


# -- -netdev -----------------------------------------------------------------------------------


def test_user_backend() -> None:
    assert netdev_props(iface(type=InterfaceType.USER), NICResources()) == {
        "type": "user",
        "id": "hostnet0",
    }


@pytest.mark.parametrize(
    ("resources", "expected"),
    [
        (NICResources(tap_fds=("7",)), {"type": "tap", "fd": "7", "id": "hostnet0"}),
        (
            NICResources(tap_fds=("7",), vhost_fds=("8",)),
            {"type": "tap", "fd": "7", "vhost": True, "vhostfd": "8", "id": "hostnet0"},
        ),
        (
            NICResources(tap_fds=("7", "9")),
            {"type": "tap", "fds": "7:9", "id": "hostnet0"},
        ),
        (
            NICResources(tap_fds=("7", "9"), vhost_fds=("8", "10")),
            {"type": "tap", "fds": "7:9", "vhost": True, "vhostfds": "8:10", "id": "hostnet0"},
        ),
    ],
)
def test_tap_backend(resources: NICResources, expected: dict[str, object]) -> None:
    props = netdev_props(iface(), resources)
    assert list(props.items()) == list(expected.items())  # order too, as libvirt


def test_tap_backend_without_a_tap_is_refused() -> None:
    with pytest.raises(UnsupportedError, match="net0 has no tap prepared"):
        netdev_props(iface(), NICResources())


def test_netdev_id_follows_user_alias() -> None:
    props = netdev_props(iface(alias="ua-x"), NICResources(tap_fds=("fd-a",)))
    assert props["id"] == "hostua-x"


# -- -device -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "driver"),
    [
        ("virtio", "virtio-net-pci"),
        ("virtio-transitional", "virtio-net-pci-transitional"),
        ("virtio-non-transitional", "virtio-net-pci-non-transitional"),
        ("e1000", "e1000"),
        ("e1000e", "e1000e"),
        ("rtl8139", "rtl8139"),
        ("netfront", "xen-net-device"),
        (None, "rtl8139"),
    ],
)
def test_device_driver(model: str | None, driver: str) -> None:
    assert device_driver(iface(model=model)) == driver
    assert DEFAULT_MODEL == "rtl8139"


def test_hostdev_interface_is_vfio() -> None:
    assert device_driver(iface(type=InterfaceType.HOSTDEV)) == "vfio-pci"


def test_pci_addr() -> None:
    assert pci_addr(3, 0) == "0x3"
    assert pci_addr(0x1F, 2) == "0x1f.0x2"


def test_virtio_full_property_order() -> None:
    nic = iface(
        model="virtio",
        driver=InterfaceDriverDef(queues=4, rx_queue_size=512, tx_queue_size=256),
        mtu=9000,
        boot_order=1,
        address=PCIAddress(0, 1, 0, 0),
    )
    props = interface_device_props(q35(), nic, failover=True)
    assert list(props.items()) == [
        ("driver", "virtio-net-pci"),
        ("mq", True),
        ("vectors", 10),
        ("rx_queue_size", 512),
        ("tx_queue_size", 256),
        ("host_mtu", 9000),
        ("netdev", "hostnet0"),
        ("id", "net0"),
        ("mac", "52:54:00:12:34:56"),
        ("bootindex", 1),
        ("bus", "pci.1"),
        ("addr", "0x0"),
    ]


def test_single_queue_virtio_has_no_mq() -> None:
    props = interface_device_props(pc(), iface(model="virtio"), failover=True)
    assert "mq" not in props and "vectors" not in props
    props = interface_device_props(
        pc(), iface(model="virtio", driver=InterfaceDriverDef(queues=1)), failover=True
    )
    assert "mq" not in props


def test_virtio_only_properties_stay_off_other_models() -> None:
    nic = iface(model="e1000e", mtu=9000, boot_order=2, address=PCIAddress(0, 0, 5, 0))
    props = interface_device_props(pc(), nic, failover=True)
    assert list(props.items()) == [
        ("driver", "e1000e"),
        ("netdev", "hostnet0"),
        ("id", "net0"),
        ("mac", "52:54:00:12:34:56"),
        ("bootindex", 2),
        ("bus", "pci.0"),
        ("addr", "0x5"),
    ]


def test_failover_standby() -> None:
    nic = iface(model="virtio", alias="ua-b", teaming=TeamingDef(type=TeamingType.PERSISTENT))
    props = interface_device_props(pc(), nic, failover=True)
    assert list(props)[:3] == ["driver", "failover", "netdev"]
    assert props["failover"] is True
    assert "failover" not in interface_device_props(pc(), nic, failover=False)


def test_failover_primary_vfio() -> None:
    nic = iface(
        type=InterfaceType.HOSTDEV,
        alias="hostdev0",
        source=InterfaceSourceDef(pci=VF),
        teaming=TeamingDef(type=TeamingType.TRANSIENT, persistent="ua-b"),
        boot_order=3,
        address=PCIAddress(0, 2, 0, 0),
    )
    props = interface_device_props(q35(), nic, failover=True)
    assert list(props.items()) == [
        ("driver", "vfio-pci"),
        ("host", "0000:03:07.1"),
        ("id", "hostdev0"),
        ("bootindex", 3),
        ("failover_pair_id", "ua-b"),
        ("bus", "pci.2"),
        ("addr", "0x0"),
    ]


def test_netfront_is_not_placed_on_pci() -> None:
    nic = iface(model="netfront", address=PCIAddress(0, 0, 4, 0))
    props = interface_device_props(pc(), nic, failover=True)
    assert "bus" not in props and "addr" not in props
    assert props["driver"] == "xen-net-device"


def test_interface_without_mac_or_address() -> None:
    props = interface_device_props(pc(), iface(mac=None, model="rtl8139"), failover=True)
    assert props == {"driver": "rtl8139", "netdev": "hostnet0", "id": "net0"}


def test_hostdev_props() -> None:
    dev = HostdevDef(source=VF, alias="hostdev1", boot_order=4, address=PCIAddress(0, 0, 6, 1))
    assert list(hostdev_props(pc(), dev).items()) == [
        ("driver", "vfio-pci"),
        ("host", "0000:03:07.1"),
        ("id", "hostdev1"),
        ("bootindex", 4),
        ("bus", "pci.0"),
        ("addr", "0x6.0x1"),
    ]
