"""Nothing inside an <interface> or <hostdev> is silently ignored: every part qctl would not
apply is refused with its element, its line and "not supported by qctl" (a warning under
lenient), and ``format`` still passes it through. Then the doubts that are only warnings."""

from __future__ import annotations

import dataclasses
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from qctl.cli.main import main
from qctl.conf import (
    HostdevDef,
    InterfaceDef,
    InterfaceType,
    RawXML,
    format_xml,
    parse_device,
    parse_domain,
    review,
    validate_device,
    validate_domain,
)
from qctl.conf.support import HOSTDEV_PARTS, INTERFACE_PARTS, REFUSED_PARTS
from qctl.errors import ValidationError
from qctl.types import PCIAddress

README = Path(__file__).parents[2] / "README.md"
VF = "<address type='pci' domain='0x0000' bus='0x3b' slot='0x10' function='0x2'/>"


def _domain(device: str) -> str:
    """A valid domain whose only device is ``device`` (its first line is line 8)."""
    return (
        "<domain type='qemu'>\n  <name>t</name>\n  <memory unit='MiB'>64</memory>\n"
        "  <os>\n    <type>hvm</type>\n  </os>\n  <devices>\n"
        + textwrap.indent(textwrap.dedent(device).strip("\n"), "    ")
        + "\n  </devices>\n</domain>\n"
    )


BRIDGE = (
    "<interface type='bridge'>\n  <source bridge='br0'/><model type='virtio'/>\n{}\n</interface>"
)
HOSTDEV_NIC = "<interface type='hostdev'>\n  <source>" + VF + "</source>\n{}\n</interface>"
HOSTDEV = "<hostdev mode='subsystem' type='pci'>\n  <source>" + VF + "</source>\n{}\n</hostdev>"

# (id, device template, the refused part on line 10, what the message names)
REFUSED = [
    ("virtualport", BRIDGE, "<virtualport type='openvswitch'/>", "<virtualport>"),
    ("bandwidth", BRIDGE, "<bandwidth><inbound average='1000'/></bandwidth>", "<bandwidth>"),
    ("filterref", BRIDGE, "<filterref filter='clean-traffic'/>", "<filterref>"),
    ("tune", BRIDGE, "<tune><sndbuf>1600</sndbuf></tune>", "<tune>"),
    ("coalesce", BRIDGE, "<coalesce><rx><frames max='7'/></rx></coalesce>", "<coalesce>"),
    ("interface-rom", BRIDGE, "<rom bar='off'/>", "<rom>"),
    ("backend", BRIDGE, "<backend tap='/dev/net/tun'/>", "<backend>"),
    ("port", BRIDGE, "<port isolated='yes'/>", "<port>"),
    ("portForward", BRIDGE, "<portForward proto='tcp'/>", "<portForward>"),
    ("driver-offload", BRIDGE, "<driver name='qemu' csum='off'/>", "<driver csum=…>"),
    ("driver-rss", BRIDGE, "<driver rss='on'/>", "<driver rss=…>"),
    ("driver-host", BRIDGE, "<driver><host tso4='off'/></driver>", "<host>"),
    ("driver-guest", BRIDGE, "<driver><guest ecn='off'/></driver>", "<guest>"),
    ("driver-iommu", BRIDGE, "<driver iommu='on'/>", "<driver iommu=…>"),
    ("driver-ats", BRIDGE, "<driver ats='on'/>", "<driver ats=…>"),
    ("driver-packed", BRIDGE, "<driver packed='on'/>", "<driver packed=…>"),
    ("target-unmanaged", BRIDGE, "<target dev='tap0' managed='no'/>", "<target managed='no'>"),
    ("vlan-on-tap", BRIDGE, "<vlan><tag id='42'/></vlan>", "<vlan> on an interface with a tap"),
    ("address-ccw", BRIDGE, "<address type='ccw' cssid='0xfe'/>", "<address> of this type"),
    ("mac-type", BRIDGE, "<mac address='52:54:00:00:00:01' type='static'/>", "<mac type=…>"),
    ("unknown", BRIDGE, "<frobnicate/>", "<frobnicate>"),
    ("vlan-trunk", HOSTDEV_NIC, "<vlan trunk='yes'><tag id='42'/></vlan>", "<vlan trunk='yes'>"),
    (
        "vlan-two-tags",
        HOSTDEV_NIC,
        "<vlan><tag id='42'/><tag id='43'/></vlan>",
        "<vlan> with several tags",
    ),
    (
        "vlan-native",
        HOSTDEV_NIC,
        "<vlan><tag id='42' nativeMode='untagged'/></vlan>",
        "<tag nativeMode='untagged'>",
    ),
    ("hostdev-nic-link", HOSTDEV_NIC, "<link state='down'/>", "<link> on a hostdev interface"),
    ("hostdev-nic-mtu", HOSTDEV_NIC, "<mtu size='9000'/>", "<mtu> on a hostdev interface"),
    ("hostdev-nic-filterref", HOSTDEV_NIC, "<filterref filter='x'/>", "<filterref>"),
    ("hostdev-rom", HOSTDEV, "<rom bar='off'/>", "<rom>"),
    ("hostdev-acpi", HOSTDEV, "<acpi index='3'/>", "<acpi>"),
    ("hostdev-driver-kvm", HOSTDEV, "<driver name='kvm'/>", "<driver name='kvm'>"),
    ("hostdev-address-flag", HOSTDEV, "<address type='pci' multifunction='on'/>", "<address "),
]


def _document(template: str, part: str) -> str:
    return _domain(template.format("  " + part))


@pytest.mark.parametrize(
    ("template", "part", "what"),
    [case[1:] for case in REFUSED],
    ids=[case[0] for case in REFUSED],
)
def test_part_qctl_does_not_apply_is_refused_with_its_line(
    template: str, part: str, what: str
) -> None:
    document = _document(template, part)
    problems, warnings = review(document, source="dom.xml")
    assert len(problems) == 1, "\n".join(map(str, problems))
    (problem,) = problems
    assert problem.line == 10
    assert what in problem.message and problem.message.endswith("not supported by qctl")
    assert str(problem).startswith("dom.xml:10: /domain/devices/")
    assert warnings == []
    # start (which loads the file like this) refuses with the same line…
    with pytest.raises(ValidationError, match="not supported by qctl"):
        parse_domain(document, source="dom.xml")
    # …validate --lenient makes it a warning, and format passes the part through.
    problems, warnings = review(document, source="dom.xml", lenient=True)
    assert problems == [] and [str(w) for w in warnings] == [str(problem)]
    out = format_xml(parse_domain(document, lenient=True))
    for element in ET.fromstring(part).iter():
        assert f"<{element.tag}" in out
        assert all(f'{name}="' in out for name in element.attrib)


def test_the_driver_validation_refuses_them_too() -> None:
    """A definition built in code (or by Domain.attach_device from XML) goes through
    validate_device and validate_domain, which the driver runs at attach and at start."""
    iface = parse_device(
        "<interface type='user'>\n<bandwidth><inbound average='1'/></bandwidth>\n</interface>",
        lenient=True,
    )
    (problem,) = validate_device(iface, source="attach.xml")
    assert str(problem) == (
        "attach.xml:2: /interface/bandwidth: <bandwidth> is not supported by qctl"
    )
    built = InterfaceDef(
        type=InterfaceType.USER,
        extra=(RawXML(xml="<virtualport type='802.1Qbh'/>", tag="virtualport"),),
    )
    assert "<virtualport> is not supported by qctl" in validate_device(built)[0].message
    hostdev = HostdevDef(source=PCIAddress(0, 5, 0, 0), extra_attrs=(("display", "on"),))
    domain = parse_domain(_domain("<interface type='user'/>"))
    domain = dataclasses.replace(
        domain, devices=dataclasses.replace(domain.devices, items=(hostdev,))
    )
    (problem,) = validate_domain(domain)
    assert problem.message == "<hostdev display=…> is not supported by qctl"


def test_comments_and_the_applied_parts_are_accepted() -> None:
    document = _domain(
        f"""
        <interface type='hostdev' managed='yes'>
          <!-- a VF of the first port -->
          <mac address='52:54:00:00:00:01'/>
          <source>{VF}</source>
          <driver name='vfio'/>
          <vlan><tag id='42'/></vlan>
          <boot order='1'/>
          <alias name='ua-vf'/>
          <address type='pci'/>
        </interface>
        <hostdev mode='subsystem' type='pci' managed='yes'>
          <driver name='vfio'/>
          <source><address domain='0x0000' bus='0x05' slot='0x00' function='0x0'/></source>
          <address type='unassigned'/>
        </hostdev>
        """
    )
    assert review(document) == ([], [])


def test_validate_cli_lenient_warns_and_passes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "dom.xml"
    path.write_text(_document(BRIDGE, "<bandwidth><inbound average='1'/></bandwidth>"))
    assert main(["validate", str(path)]) == 3
    assert capsys.readouterr().err == (
        f"{path}:10: /domain/devices/interface[1]/bandwidth: <bandwidth> is not supported by qctl\n"
    )
    assert main(["validate", "--lenient", str(path)]) == 0
    assert capsys.readouterr().err == (
        f"{path}:10: warning: /domain/devices/interface[1]/bandwidth: "
        "<bandwidth> is not supported by qctl\n"
    )
    assert main(["format", str(path)]) == 0
    assert '<inbound average="1"/>' in capsys.readouterr().out
    assert main(["start", "--state-dir", str(tmp_path / "state"), str(path)]) == 3
    assert capsys.readouterr().err == (
        f"qctl: {path}:10: /domain/devices/interface[1]/bandwidth: "
        "<bandwidth> is not supported by qctl\n"
    )


# -- what libvirt accepts: warnings, not errors -------------------------------------------


def test_a_mac_used_twice_is_a_warning() -> None:
    document = _domain(
        "<interface type='user'>\n  <mac address='52:54:00:00:00:01'/>\n</interface>\n"
        "<interface type='user'>\n  <mac address='52:54:00:00:00:01'/>\n</interface>"
    )
    problems, (warning,) = review(document, source="dom.xml")
    assert problems == []
    assert str(warning) == (
        "dom.xml:12: /domain/devices/interface[2]/mac: "
        "MAC address 52:54:00:00:00:01 is already used by /domain/devices/interface[1]"
    )
    parse_domain(document)  # accepted


def test_a_model_on_a_hostdev_interface_is_a_warning() -> None:
    document = _domain(HOSTDEV_NIC.format("  <model type='virtio'/>"))
    problems, (warning,) = review(document, source="dom.xml")
    assert problems == []
    assert warning.line == 10 and "has no effect on a hostdev interface" in warning.message


# -- the README table ---------------------------------------------------------------------


def test_the_readme_table_lists_every_part_of_the_support_table() -> None:
    text = README.read_text()
    table = text[text.index("<!-- support-table -->") : text.index("<!-- /support-table -->")]
    for part in (*INTERFACE_PARTS, *HOSTDEV_PARTS, *REFUSED_PARTS):
        assert f"`{part}`" in table, f"{part} is missing from the README table"
