"""Reading documents: dispatch, what is kept of unknown XML, lines, values."""

from __future__ import annotations

from pathlib import Path
from uuid import UUID

import pytest

from qctl.conf import (
    DomainDef,
    HostdevDef,
    InterfaceDef,
    InterfaceType,
    NetDriverName,
    NetworkDef,
    RawXML,
    USBAddress,
    check,
    load,
    load_domain,
    load_network,
    parse_device,
    parse_domain,
    parse_network,
)
from qctl.errors import ConfigError, ValidationError, XMLSyntaxError
from qctl.types import IfName, MACAddress, PCIAddress

EXAMPLES = Path(__file__).parents[2] / "examples"


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("domain-basic.xml", DomainDef),
        ("network-bridge.xml", NetworkDef),
        ("interface-hostdev-pci.xml", InterfaceDef),
    ],
)
def test_load_dispatches_on_the_root_element(name: str, kind: type) -> None:
    assert isinstance(load(EXAMPLES / name), kind)


def test_load_reads_a_lone_hostdev(tmp_path: Path) -> None:
    path = tmp_path / "hostdev.xml"
    path.write_text(
        "<hostdev mode='subsystem' type='pci'><source><address bus='3'/></source></hostdev>"
    )
    hostdev = load(path)
    assert isinstance(hostdev, HostdevDef)
    assert hostdev.source == PCIAddress(0, 3, 0, 0)


def test_load_names_the_file_in_errors(tmp_path: Path) -> None:
    path = tmp_path / "bad.xml"
    path.write_text("<domain type='qemu'>\n  <name>x</name>\n</domain>\n")
    with pytest.raises(ValidationError) as info:
        load(path)
    assert str(info.value).startswith(f"{path}:1: /domain/memory: ")


def test_load_reports_an_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path / "missing.xml")
    assert str(info.value) == f"{tmp_path / 'missing.xml'}: cannot read: No such file or directory"


def test_load_domain_and_load_network_return_their_kind_or_name_the_file() -> None:
    domain: DomainDef = load_domain(EXAMPLES / "domain-basic.xml")
    network: NetworkDef = load_network(EXAMPLES / "network-bridge.xml")
    assert (domain.name, network.name) == ("basic", "lan")
    with pytest.raises(ValidationError) as info:
        load_domain(EXAMPLES / "network-bridge.xml")
    assert str(info.value) == (
        f"{EXAMPLES / 'network-bridge.xml'}:3: /network: expected a <domain> document, "
        "not <network>"
    )
    with pytest.raises(ConfigError, match=r"missing.xml: cannot read: No such file"):
        load_domain(EXAMPLES / "missing.xml")


def test_parse_functions_refuse_other_documents() -> None:
    network = (EXAMPLES / "network-bridge.xml").read_text()
    with pytest.raises(ValidationError, match=r"expected a <domain> document, not <network>"):
        parse_domain(network)
    with pytest.raises(
        ValidationError, match=r"expected a <interface> or <hostdev> document, not <network>"
    ):
        parse_device(network)
    with pytest.raises(ValidationError, match=r"expected a <network> document, not <domain>"):
        parse_network((EXAMPLES / "domain-basic.xml").read_bytes())


def test_check_reports_malformed_xml_as_one_syntax_error() -> None:
    (problem,) = check("<domain>\n<name>", source="x.xml")
    assert isinstance(problem, XMLSyntaxError)
    assert problem.line == 2 and problem.column is not None


def test_unknown_parts_are_kept_where_they_were() -> None:
    domain = parse_domain(
        lenient=True,  # kept, for format; start refuses those inside devices
        data="<domain type='qemu' id='4'>\n"
        "  <title>first</title>\n"
        "  <name>x</name>\n"
        "  <memory unit='MiB' dumpCore='off'>64</memory>\n"
        "  <currentMemory>65536</currentMemory>\n"
        "  <os firmware='efi'><type>hvm</type><loader>/l</loader></os>\n"
        "  <devices>\n"
        "    <video type='vga'/>\n"
        "    <interface type='user' trustGuestRxFilters='yes'>\n"
        "      <mac address='52:54:00:00:00:01' type='static'/>\n"
        "      <rom enabled='no'/>\n"
        "    </interface>\n"
        "    <!-- note -->\n"
        "  </devices>\n"
        "</domain>\n",
    )
    assert domain.extra_attrs == (("id", "4"),)
    assert domain.child_attrs == (("memory", "dumpCore", "off"),)
    assert [(r.tag, r.after, r.line) for r in domain.extra] == [
        ("title", None, 2),
        ("currentMemory", "memory", 5),
    ]
    assert domain.os.extra_attrs == (("firmware", "efi"),)
    assert domain.os.extra == (RawXML(xml="<loader>/l</loader>", tag="loader", after="type"),)
    disk, iface, comment = domain.devices.items
    assert disk == RawXML(xml='<video type="vga"/>', tag="video")
    assert comment == RawXML(xml="<!-- note -->", tag="#comment")
    assert isinstance(iface, InterfaceDef)
    assert iface.extra_attrs == (("trustGuestRxFilters", "yes"),)
    assert iface.child_attrs == (("mac", "type", "static"),)
    assert iface.extra == (RawXML(xml='<rom enabled="no"/>', tag="rom", after="mac"),)


def test_lines_are_recorded() -> None:
    domain = load(EXAMPLES / "domain-basic.xml")
    assert isinstance(domain, DomainDef)
    bridge = domain.interfaces[1]
    assert bridge.line == 29
    assert bridge.line_of("mac") == 30
    assert bridge.line_of("driver") == 33
    assert bridge.driver is not None and bridge.driver.line == 33
    assert domain.line_of("memory") == 6


def test_values_are_typed() -> None:
    domain = load(EXAMPLES / "domain-basic.xml")
    assert isinstance(domain, DomainDef)
    assert domain.uuid == UUID("6f1b4c36-2a2e-4c1f-9a53-0b6f7d9f2c11")
    assert domain.memory.kib == 256 * 1024
    assert domain.os.kernel == "/var/lib/qctl/guest/vmlinuz"
    bridge = domain.interfaces[1]
    assert bridge.type is InterfaceType.BRIDGE
    assert bridge.mac == MACAddress.parse("52:54:00:12:34:02")
    assert bridge.source is not None and bridge.source.bridge == IfName("qctlbr0")
    assert bridge.driver is not None
    assert (bridge.driver.name, bridge.driver.queues) == (NetDriverName.VHOST, 2)
    assert (bridge.driver.rx_queue_size, bridge.driver.tx_queue_size) == (512, 256)
    eth = domain.interfaces[2]
    assert (eth.target_dev, eth.target_managed, eth.mtu) == (IfName("qctltap0"), True, 1500)


@pytest.mark.parametrize(
    ("name", "pci", "usb", "vendor", "product"),
    [
        ("interface-hostdev-pci.xml", PCIAddress(0, 0x3B, 2, 1), None, None, None),
        ("interface-hostdev-usb-busdev.xml", None, USBAddress(1, 3), None, None),
        ("interface-hostdev-usb-vendor.xml", None, None, 0x0B95, 0x1790),
    ],
)
def test_hostdev_interface_sources(
    name: str,
    pci: PCIAddress | None,
    usb: USBAddress | None,
    vendor: int | None,
    product: int | None,
) -> None:
    iface = parse_device((EXAMPLES / name).read_bytes())
    assert isinstance(iface, InterfaceDef) and iface.source is not None
    assert (iface.source.pci, iface.source.usb) == (pci, usb)
    assert (iface.source.vendor, iface.source.product) == (vendor, product)


def test_source_address_type_defaults_like_libvirt() -> None:
    usb = parse_device(
        "<interface type='hostdev'><source><vendor id='0x1'/><product id='0x2'/>"
        "<address bus='1' device='2'/></source></interface>"
    )
    assert isinstance(usb, InterfaceDef) and usb.source is not None
    assert usb.source.usb == USBAddress(1, 2)
    pci = parse_device(
        "<interface type='hostdev'><source><address bus='1' slot='2'/></source></interface>"
    )
    assert isinstance(pci, InterfaceDef) and pci.source is not None
    assert pci.source.pci == PCIAddress(0, 1, 2, 0)


def test_pci_numbers_are_decimal_or_hex() -> None:
    iface = parse_device(
        "<interface type='user'><address type='pci' bus='10' slot='0x10' function='7'/></interface>"
    )
    assert isinstance(iface, InterfaceDef)
    assert iface.address == PCIAddress(0, 10, 16, 7)


def test_guest_address_of_another_type_is_kept_raw() -> None:
    iface = parse_device(
        "<interface type='user'><address type='ccw' cssid='0xfe' devno='0x0001'/></interface>",
        lenient=True,
    )
    assert isinstance(iface, InterfaceDef)
    assert iface.address is None
    assert [raw.tag for raw in iface.extra] == ["address"]


def test_root_namespaces_are_kept() -> None:
    domain = parse_domain(
        "<domain type='kvm' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>"
        "<name>n</name><memory>1024</memory><os><type>hvm</type></os>"
        "<qemu:commandline><qemu:arg value='-S'/></qemu:commandline></domain>"
    )
    assert domain.namespaces == (("qemu", "http://libvirt.org/schemas/domain/qemu/1.0"),)
    (raw,) = domain.extra
    assert raw.tag == "{http://libvirt.org/schemas/domain/qemu/1.0}commandline"
    assert raw.after == "os"


def test_str_and_bytes_are_both_accepted() -> None:
    text = (EXAMPLES / "network-hostdev-vfs.xml").read_text()
    assert parse_network(text) == parse_network(text.encode())


@pytest.mark.parametrize(
    "uuid", ["0b6c8f2e-6d47-4d8b-9d8e-0a7b3c5e1f20", "0B6C8F2E6D474D8B9D8E0A7B3C5E1F20"]
)
def test_uuid_spellings(uuid: str) -> None:
    network = parse_network(
        f"<network><name>n</name><uuid>{uuid}</uuid><forward mode='bridge'/>"
        "<bridge name='br0'/></network>"
    )
    assert network.uuid == UUID("0b6c8f2e-6d47-4d8b-9d8e-0a7b3c5e1f20")


def test_unsupported_devices_of_known_elements_pass_through() -> None:
    domain = parse_domain(
        "<domain type='qemu'><name>n</name><memory>1024</memory><os><type>hvm</type></os>"
        "<devices><controller type='usb' model='qemu-xhci'/><serial type='tcp'/>"
        "<hostdev mode='subsystem' type='usb'/></devices></domain>"
    )
    assert [type(item) for item in domain.devices.items] == [RawXML, RawXML, RawXML]
