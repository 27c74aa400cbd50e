"""Aliases and guest PCI addresses (qctl.qemu.placement): pure functions on definitions."""

from __future__ import annotations

import pytest

from qctl.conf import (
    ControllerDef,
    ControllerModel,
    DomainDef,
    HostdevDef,
    InterfaceDef,
    InterfaceType,
    RawXML,
    parse_domain,
)
from qctl.errors import UnsupportedError, ValidationError
from qctl.qemu.placement import (
    alias_for,
    assign_aliases,
    bus_id,
    is_q35,
    netdev_id,
    place_device,
    plan_domain,
    root_port_props,
)
from qctl.types import PCIAddress


def domain(machine: str, devices: str = "", kind: str = "qemu") -> DomainDef:
    return parse_domain(
        f"<domain type='{kind}'><name>t</name><memory unit='MiB'>64</memory>"
        f"<os><type arch='x86_64' machine='{machine}'>hvm</type></os>"
        f"<devices>{devices}</devices></domain>"
    )


def nic(model: str = "virtio", extra: str = "") -> str:
    return f"<interface type='user'><model type='{model}'/>{extra}</interface>"


def address(bus: int, slot: int, function: int = 0) -> str:
    return (
        f"<address type='pci' domain='0x0000' bus='{bus:#x}' slot='{slot:#x}' "
        f"function='{function:#x}'/>"
    )


def hostdev(host_slot: int, extra: str = "") -> str:
    return (
        "<hostdev mode='subsystem' type='pci' managed='yes'><source>"
        f"<address domain='0x0000' bus='0x05' slot='{host_slot:#x}' function='0x0'/>"
        f"</source>{extra}</hostdev>"
    )


def placed(defn: DomainDef) -> list[tuple[str | None, PCIAddress | None]]:
    return [
        (d.alias, d.address) for d in defn.devices.items if isinstance(d, InterfaceDef | HostdevDef)
    ]


def ports(defn: DomainDef) -> list[tuple[int, PCIAddress | None]]:
    return [
        (c.index, c.address) for c in defn.controllers if c.model is ControllerModel.PCIE_ROOT_PORT
    ]


# -- names ------------------------------------------------------------------------------------


def test_machine_kind_and_ids() -> None:
    assert is_q35(domain("q35")) and is_q35(domain("pc-q35-7.2"))
    assert not is_q35(domain("pc")) and not is_q35(domain("pc-i440fx-7.2"))
    assert bus_id(domain("q35"), 0) == "pcie.0"
    assert bus_id(domain("pc"), 0) == "pci.0"
    assert bus_id(domain("pc"), 3) == "pci.3"
    assert netdev_id("net0") == "hostnet0"
    assert netdev_id("ua-backup0") == "hostua-backup0"


def test_aliases_like_libvirt() -> None:
    xml = (
        nic()
        + "<interface type='hostdev' managed='yes'><source>"
        + "<address type='pci' domain='0x0000' bus='0x03' slot='0x07' function='0x1'/>"
        + "</source></interface>"
        + hostdev(1)
        + nic(extra="<alias name='ua-mine'/>")
        + nic()
        + "<serial type='pty'/>"
    )
    defn = assign_aliases(domain("pc", xml))
    aliases = [d.alias for d in defn.devices.items if not isinstance(d, ControllerDef | RawXML)]
    assert aliases == ["net0", "hostdev0", "hostdev1", "ua-mine", "net1", "serial0"]


def test_aliases_keep_existing_and_fill_gaps() -> None:
    xml = nic(extra="<alias name='ua-net0'/>") + nic() + nic()
    defn = assign_aliases(domain("pc", xml))
    assert [i.alias for i in defn.interfaces] == ["ua-net0", "net0", "net1"]


def test_alias_for_hotplug_is_free() -> None:
    defn = plan_domain(domain("pc", nic() + nic()))
    new = alias_for(defn, InterfaceDef(type=InterfaceType.USER))
    assert new.alias == "net2"
    named = alias_for(defn, InterfaceDef(type=InterfaceType.USER, alias="ua-x"))
    assert named.alias == "ua-x"


def test_controllers_are_named_by_index() -> None:
    xml = "<controller type='pci' index='1' model='pcie-root-port'/>"
    defn = plan_domain(domain("q35", xml))
    assert [(c.index, c.alias) for c in defn.controllers] == [(0, "pcie.0"), (1, "pci.1")]


# -- pc -----------------------------------------------------------------------------------------


def test_pc_slots_from_2_on_pci0() -> None:
    defn = plan_domain(domain("pc", nic() + nic("e1000") + hostdev(0)))
    assert placed(defn) == [
        ("net0", PCIAddress(0, 0, 2, 0)),
        ("net1", PCIAddress(0, 0, 3, 0)),
        ("hostdev0", PCIAddress(0, 0, 4, 0)),
    ]
    root = defn.controllers[0]
    assert (root.index, root.model, root.alias) == (0, ControllerModel.PCI_ROOT, "pci.0")
    assert ports(defn) == []


def test_pc_explicit_addresses_kept_and_skipped() -> None:
    defn = plan_domain(domain("pc", nic() + nic(extra=address(0, 2)) + nic(extra=address(0, 5))))
    assert placed(defn) == [
        ("net0", PCIAddress(0, 0, 3, 0)),
        ("net1", PCIAddress(0, 0, 2, 0)),
        ("net2", PCIAddress(0, 0, 5, 0)),
    ]


def test_pc_runs_out_of_slots() -> None:
    xml = "".join(nic() for _ in range(0x1E - 2 + 1))  # slots 2..0x1e
    assert len(plan_domain(domain("pc", xml)).interfaces) == 29
    with pytest.raises(UnsupportedError, match="no free PCI slot") as info:
        plan_domain(domain("pc", xml + nic()))
    assert info.value.capability == "pci-slot"


# -- q35 ----------------------------------------------------------------------------------------


def test_q35_one_new_root_port_per_device() -> None:
    defn = plan_domain(domain("q35", nic() + hostdev(0) + nic("e1000e")))
    assert ports(defn) == [
        (1, PCIAddress(0, 0, 1, 0)),
        (2, PCIAddress(0, 0, 2, 0)),
        (3, PCIAddress(0, 0, 3, 0)),
    ]
    assert placed(defn) == [
        ("net0", PCIAddress(0, 1, 0, 0)),
        ("hostdev0", PCIAddress(0, 2, 0, 0)),
        ("net1", PCIAddress(0, 3, 0, 0)),
    ]
    assert defn.controllers[0].model is ControllerModel.PCIE_ROOT


def test_q35_spare_declared_ports_first() -> None:
    xml = (
        "<controller type='pci' index='0' model='pcie-root'/>"
        f"<controller type='pci' index='1' model='pcie-root-port'>{address(0, 4)}</controller>"
        "<controller type='pci' index='2' model='pcie-root-port'/>"
        "<controller type='pci' index='3' model='pcie-root-port'/>"
        + nic(extra=address(3, 0))
        + nic()
        + nic()
        + nic()
    )
    defn = plan_domain(domain("q35", xml))
    assert ports(defn) == [
        (1, PCIAddress(0, 0, 4, 0)),  # explicit, kept
        (2, PCIAddress(0, 0, 1, 0)),  # declared without address: first free slot
        (3, PCIAddress(0, 0, 2, 0)),
        (4, PCIAddress(0, 0, 3, 0)),  # added for the last NIC
    ]
    assert placed(defn) == [
        ("net0", PCIAddress(0, 3, 0, 0)),  # explicit
        ("net1", PCIAddress(0, 1, 0, 0)),  # spare declared ports, in index order
        ("net2", PCIAddress(0, 2, 0, 0)),
        ("net3", PCIAddress(0, 4, 0, 0)),
    ]


def test_new_ports_follow_the_last_controller_in_document_order() -> None:
    xml = "<controller type='pci' index='1' model='pcie-root-port'/>" + nic() + nic()
    defn = plan_domain(domain("q35", xml))
    kinds = [type(d).__name__ for d in defn.devices.items]
    assert kinds == ["ControllerDef"] * 3 + ["InterfaceDef"] * 2


# -- conflicts and hot-plug --------------------------------------------------------------------


def test_conflicting_explicit_address_is_refused() -> None:
    defn = plan_domain(domain("pc", nic(extra=address(0, 3))))
    clash = InterfaceDef(type=InterfaceType.USER, address=PCIAddress(0, 0, 3, 0))
    with pytest.raises(ValidationError, match=r"0000:00:03\.0 is already in use"):
        place_device(defn, clash, may_add_port=False)


def test_hotplug_on_pc_takes_the_next_free_slot() -> None:
    defn = plan_domain(domain("pc", nic()))
    same, device = place_device(defn, InterfaceDef(type=InterfaceType.USER), may_add_port=False)
    assert same is defn
    assert device.address == PCIAddress(0, 0, 3, 0)


def test_hotplug_on_q35_uses_a_free_port() -> None:
    xml = (
        nic()
        + "<controller type='pci' index='5' model='pcie-root-port'/>"
        + "<controller type='pci' index='6' model='pcie-root-port'/>"
    )
    defn = plan_domain(domain("q35", xml))
    assert defn.interfaces[0].address == PCIAddress(0, 5, 0, 0)
    same, device = place_device(defn, InterfaceDef(type=InterfaceType.USER), may_add_port=False)
    assert same is defn
    assert device.address == PCIAddress(0, 6, 0, 0)


def test_hotplug_on_q35_without_a_free_port_is_refused() -> None:
    defn = plan_domain(domain("q35", nic()))
    with pytest.raises(UnsupportedError, match="no free pcie-root-port") as info:
        place_device(defn, InterfaceDef(type=InterfaceType.USER), may_add_port=False)
    assert info.value.capability == "pcie-root-port"


def test_place_device_may_add_a_port() -> None:
    defn = plan_domain(domain("q35", nic()))
    grown, device = place_device(defn, InterfaceDef(type=InterfaceType.USER), may_add_port=True)
    assert ports(grown) == [(1, PCIAddress(0, 0, 1, 0)), (2, PCIAddress(0, 0, 2, 0))]
    assert device.address == PCIAddress(0, 2, 0, 0)


def test_root_port_and_bridge_props() -> None:
    xml = f"<controller type='pci' index='1' model='pcie-root-port'>{address(0, 2)}</controller>"
    defn = plan_domain(domain("q35", xml))
    assert root_port_props(defn, defn.controllers[1]) == {
        "driver": "pcie-root-port",
        "port": 16,
        "chassis": 1,
        "id": "pci.1",
        "bus": "pcie.0",
        "addr": "0x2",
    }
    bridge_xml = f"<controller type='pci' index='1' model='pci-bridge'>{address(0, 7)}</controller>"
    pc = plan_domain(domain("pc", bridge_xml))
    assert root_port_props(pc, pc.controllers[1]) == {
        "driver": "pci-bridge",
        "chassis_nr": 1,
        "id": "pci.1",
        "bus": "pci.0",
        "addr": "0x7",
    }


def test_planning_is_idempotent() -> None:
    once = plan_domain(domain("q35", nic() + hostdev(1) + nic()))
    assert plan_domain(once) == once
