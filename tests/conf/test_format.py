"""Writing definitions: definitions built in code, and where unknown parts go back."""

from __future__ import annotations

from dataclasses import replace
from uuid import UUID

from qctl.conf import (
    DomainDef,
    DomainType,
    HostdevDef,
    InterfaceDef,
    InterfaceDriverDef,
    InterfaceSourceDef,
    InterfaceType,
    LinkState,
    MemoryDef,
    NetDriverName,
    OSDef,
    RawXML,
    TeamingDef,
    TeamingType,
    format_xml,
    parse_device,
    parse_domain,
)
from qctl.types import IfName, MACAddress, PCIAddress


def test_interface_built_in_code() -> None:
    iface = InterfaceDef(
        type=InterfaceType.BRIDGE,
        mac=MACAddress.parse("52:54:00:00:00:0A"),
        source=InterfaceSourceDef(bridge=IfName("br0")),
        model="virtio",
        driver=InterfaceDriverDef(name=NetDriverName.VHOST, queues=2, rx_queue_size=256),
        teaming=TeamingDef(type=TeamingType.PERSISTENT),
        link_state=LinkState.DOWN,
        alias="ua-new",
        address=PCIAddress(0, 7, 0, 0),
    )
    text = format_xml(iface)
    assert text == (
        '<interface type="bridge">\n'
        '  <mac address="52:54:00:00:00:0a"/>\n'
        '  <source bridge="br0"/>\n'
        '  <model type="virtio"/>\n'
        '  <driver name="vhost" queues="2" rx_queue_size="256"/>\n'
        '  <teaming type="persistent"/>\n'
        '  <link state="down"/>\n'
        '  <alias name="ua-new"/>\n'
        '  <address type="pci" domain="0x0000" bus="0x07" slot="0x00" function="0x0"/>\n'
        "</interface>\n"
    )
    assert parse_device(text) == iface


def test_hostdev_built_in_code() -> None:
    hostdev = HostdevDef(source=PCIAddress(0, 0x3B, 2, 1), managed=True, alias="ua-vf")
    assert format_xml(hostdev) == (
        '<hostdev mode="subsystem" type="pci" managed="yes">\n'
        "  <source>\n"
        '    <address domain="0x0000" bus="0x3b" slot="0x02" function="0x1"/>\n'
        "  </source>\n"
        '  <alias name="ua-vf"/>\n'
        "</hostdev>\n"
    )


def _domain(*extra: RawXML) -> DomainDef:
    return DomainDef(
        type=DomainType.QEMU,
        name="d",
        uuid=UUID("6f1b4c36-2a2e-4c1f-9a53-0b6f7d9f2c11"),
        memory=MemoryDef(1),
        os=OSDef(),
        extra=extra,
    )


def test_unknown_elements_follow_their_known_sibling() -> None:
    text = format_xml(
        _domain(
            RawXML(xml="<title>t</title>", tag="title"),
            RawXML(xml="<clock offset='utc'/>", tag="clock", after="os"),
            RawXML(xml="<description>x</description>", tag="description", after="uuid"),
            RawXML(xml="<seclabel/>", tag="seclabel", after="devices"),
        )
    )
    assert [line.strip().split(">")[0] + ">" for line in text.splitlines()[1:-1]] == [
        "<title>",
        "<name>",
        "<uuid>",
        "<description>",
        "<memory>",
        "<os>",
        "<type>",
        "</os>",
        '<clock offset="utc"/>',
        "<devices/>",
        "<seclabel/>",
    ]


def test_unknown_element_whose_sibling_is_gone_goes_last_and_stays_there() -> None:
    domain = _domain(RawXML(xml="<description>x</description>", tag="description", after="uuid"))
    text = format_xml(replace(domain, uuid=None))
    assert text.splitlines()[-2] == "  <description>x</description>"
    assert format_xml(parse_domain(text)) == text


def test_known_attributes_come_first_in_a_fixed_order() -> None:
    iface = parse_device(
        "<interface managed='no' type='hostdev' x='1'>"
        "<source><address function='1' slot='2' bus='3' domain='4' type='pci'/></source>"
        "</interface>",
        lenient=True,
    )
    lines = format_xml(iface).splitlines()
    assert lines[0] == '<interface type="hostdev" managed="no" x="1">'
    assert lines[2] == (
        '    <address type="pci" domain="0x0004" bus="0x03" slot="0x02" function="0x1"/>'
    )
