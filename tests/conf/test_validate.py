"""One test per problem a document can have: feed the bad input, check the message, the
line and the element path. Then the Def-level checks the driver uses for hot-plug."""

from __future__ import annotations

import textwrap
from dataclasses import replace
from pathlib import Path

import pytest

from qctl.conf import (
    CREATED_DEVICES,
    ControllerDef,
    ControllerModel,
    DevicesDef,
    DomainDef,
    DomainType,
    HostdevDef,
    InterfaceDef,
    InterfaceSourceDef,
    InterfaceType,
    MemoryDef,
    OSDef,
    SerialDef,
    SerialType,
    TeamingDef,
    TeamingType,
    check,
    format_xml,
    missing_images,
    not_created,
    parse_device,
    parse_domain,
    review_device,
    validate_device,
    validate_domain,
)
from qctl.errors import ConfigError, ValidationError
from qctl.types import MACAddress, PCIAddress

DEVICES_LINE = 8  # the line the first device of _domain() starts on


def _domain(devices: str = "") -> str:
    """A valid domain around ``devices`` (which start on line 8)."""
    return (
        "<domain type='qemu'>\n"
        "  <name>t</name>\n"
        "  <memory unit='MiB'>64</memory>\n"
        "  <os>\n"
        "    <type>hvm</type>\n"
        "  </os>\n"
        "  <devices>\n"
        + textwrap.indent(textwrap.dedent(devices).strip("\n"), "    ")
        + "\n  </devices>\n</domain>\n"
    )


def _network(body: str) -> str:
    """A network named ``pool`` around ``body`` (which starts on line 3)."""
    return (
        "<network>\n  <name>pool</name>\n"
        + textwrap.indent(textwrap.dedent(body).strip("\n"), "  ")
        + "\n</network>\n"
    )


VIRTIO_PERSISTENT = """
<interface type='bridge'>
  <mac address='52:54:00:00:00:01'/>
  <source bridge='br0'/>
  <model type='virtio'/>
  <teaming type='persistent'/>
  <alias name='ua-p'/>
</interface>"""  # 7 lines

HOSTDEV_SOURCE = "<source><address type='pci' bus='0x3b' slot='0x02' function='0x1'/></source>"

# (id, document, element path, message fragment, line)
CASES: list[tuple[str, str, str, str, int]] = [
    # -- MAC addresses
    (
        "mac-malformed",
        _domain("<interface type='user'>\n  <mac address='52:54:00:zz:00:01'/>\n</interface>"),
        "/domain/devices/interface[1]/mac",
        "malformed MAC address '52:54:00:zz:00:01'",
        9,
    ),
    (
        "mac-multicast",
        _domain("<interface type='user'>\n  <mac address='01:00:5e:00:00:01'/>\n</interface>"),
        "/domain/devices/interface[1]/mac",
        "multicast MAC address 01:00:5e:00:00:01 is not allowed for a NIC",
        9,
    ),
    (
        "mac-broadcast",
        _domain("<interface type='user'>\n  <mac address='ff:ff:ff:ff:ff:ff'/>\n</interface>"),
        "/domain/devices/interface[1]/mac",
        "multicast MAC address ff:ff:ff:ff:ff:ff",
        9,
    ),
    (
        "mac-zero",
        _domain("<interface type='user'>\n  <mac address='00:00:00:00:00:00'/>\n</interface>"),
        "/domain/devices/interface[1]/mac",
        "all-zero MAC address 00:00:00:00:00:00 is not allowed for a NIC",
        9,
    ),
    (
        "mac-without-address",
        _domain("<interface type='user'>\n  <mac/>\n</interface>"),
        "/domain/devices/interface[1]/mac",
        "<mac> needs the address= attribute",
        9,
    ),
    # -- interface type
    (
        "interface-type-unknown",
        _domain("<interface type='direct'>\n  <source dev='eth0'/>\n</interface>"),
        "/domain/devices/interface[1]",
        "unknown interface type 'direct' (expected one of: user, ethernet, bridge, network, "
        "hostdev)",
        8,
    ),
    (
        "interface-type-missing",
        _domain("<interface/>"),
        "/domain/devices/interface[1]",
        "<interface> needs the type= attribute",
        8,
    ),
    # -- PCI addresses
    (
        "guest-address-slot-out-of-range",
        _domain(
            "<interface type='user'>\n"
            "  <address type='pci' domain='0x0000' bus='0x00' slot='0x20' function='0x0'/>\n"
            "</interface>"
        ),
        "/domain/devices/interface[1]/address",
        "PCI address out of range: PCI slot 0x20 is out of range (0 to 0x1f)",
        9,
    ),
    (
        "guest-address-function-out-of-range",
        _domain(
            "<controller type='pci' index='0' model='pcie-root'/>\n"
            "<controller type='pci' index='1' model='pcie-root-port'>\n"
            "  <address type='pci' bus='0' slot='2' function='8'/>\n"
            "</controller>"
        ),
        "/domain/devices/controller[2]/address",
        "PCI function 0x8 is out of range (0 to 0x7)",
        10,
    ),
    (
        "interface-source-address-out-of-range",
        _domain(
            "<interface type='hostdev'>\n  <source>\n"
            "    <address type='pci' domain='0x0000' bus='0x100' slot='0x00' function='0x0'/>\n"
            "  </source>\n</interface>"
        ),
        "/domain/devices/interface[1]/source/address",
        "PCI bus 0x100 is out of range (0 to 0xff)",
        10,
    ),
    (
        "hostdev-source-address-out-of-range",
        _domain(
            "<hostdev mode='subsystem' type='pci'>\n  <source>\n"
            "    <address domain='0x10000' bus='0x00' slot='0x00' function='0x0'/>\n"
            "  </source>\n</hostdev>"
        ),
        "/domain/devices/hostdev[1]/source/address",
        "PCI domain 0x10000 is out of range (0 to 0xffff)",
        10,
    ),
    (
        "pci-address-not-a-number",
        _domain(
            "<interface type='user'>\n  <address type='pci' bus='zz' slot='0x01'/>\n</interface>"
        ),
        "/domain/devices/interface[1]/address",
        "bus= 'zz' is not a decimal or 0x-prefixed hex integer",
        9,
    ),
    (
        "guest-address-duplicate",
        _domain(
            "<interface type='user'>\n  <address type='pci' bus='0x01' slot='0x00'/>\n"
            "</interface>\n"
            "<hostdev mode='subsystem' type='pci'>\n"
            "  <source><address bus='0x3b' slot='0x02' function='0x1'/></source>\n"
            "  <address type='pci' bus='0x01' slot='0x00'/>\n</hostdev>"
        ),
        "/domain/devices/hostdev[1]/address",
        "guest PCI address 0000:01:00.0 is already used by /domain/devices/interface[1]",
        13,
    ),
    # -- aliases
    (
        "alias-without-ua",
        _domain("<interface type='user'>\n  <alias name='net0'/>\n</interface>"),
        "/domain/devices/interface[1]/alias",
        "alias 'net0' must be 'ua-' followed by letters, digits, '_' or '-'",
        9,
    ),
    (
        "alias-unsafe-character",
        _domain("<interface type='user'>\n  <alias name='ua-a.b'/>\n</interface>"),
        "/domain/devices/interface[1]/alias",
        "alias 'ua-a.b' must be 'ua-' followed by",
        9,
    ),
    (
        "alias-only-prefix",
        _domain(
            "<hostdev type='pci'>\n  <source><address bus='1'/></source>\n"
            "  <alias name='ua-'/>\n</hostdev>"
        ),
        "/domain/devices/hostdev[1]/alias",
        "alias 'ua-' must be 'ua-' followed by",
        10,
    ),
    (
        "alias-without-name",
        _domain("<interface type='user'>\n  <alias/>\n</interface>"),
        "/domain/devices/interface[1]/alias",
        "<alias> needs the name= attribute",
        9,
    ),
    (
        "alias-duplicate",
        _domain(
            "<interface type='user'>\n  <alias name='ua-a'/>\n</interface>\n"
            "<hostdev mode='subsystem' type='pci'>\n"
            "  <source><address bus='0x3b' slot='0x02' function='0x1'/></source>\n"
            "  <alias name='ua-a'/>\n</hostdev>"
        ),
        "/domain/devices/hostdev[1]/alias",
        "alias 'ua-a' is already used by /domain/devices/interface[1]",
        13,
    ),
    # -- boot order
    (
        "boot-order-duplicate",
        _domain(
            "<interface type='user'>\n  <boot order='1'/>\n</interface>\n"
            "<interface type='user'>\n  <boot order='1'/>\n</interface>"
        ),
        "/domain/devices/interface[2]/boot",
        "boot order 1 is already used by /domain/devices/interface[1]",
        12,
    ),
    (
        "boot-order-zero",
        _domain("<interface type='user'>\n  <boot order='0'/>\n</interface>"),
        "/domain/devices/interface[1]/boot",
        "boot order 0 must be 1 or more",
        9,
    ),
    # -- driver
    (
        "rx-queue-size-not-power-of-two",
        _domain(
            "<interface type='user'>\n  <model type='virtio'/>\n"
            "  <driver rx_queue_size='300'/>\n</interface>"
        ),
        "/domain/devices/interface[1]/driver",
        "rx_queue_size 300 must be a power of two from 256 to 1024",
        10,
    ),
    (
        "rx-queue-size-too-small",
        _domain(
            "<interface type='user'>\n  <model type='virtio'/><driver rx_queue_size='128'/>\n"
            "</interface>"
        ),
        "/domain/devices/interface[1]/driver",
        "rx_queue_size 128 must be a power of two from 256 to 1024",
        9,
    ),
    (
        "rx-queue-size-too-big",
        _domain(
            "<interface type='user'>\n  <model type='virtio'/><driver rx_queue_size='2048'/>\n"
            "</interface>"
        ),
        "/domain/devices/interface[1]/driver",
        "rx_queue_size 2048 must be a power of two from 256 to 1024",
        9,
    ),
    (
        "tx-queue-size-not-power-of-two",
        _domain(
            "<interface type='user'>\n  <model type='virtio'/><driver tx_queue_size='768'/>\n"
            "</interface>"
        ),
        "/domain/devices/interface[1]/driver",
        "tx_queue_size 768 must be a power of two from 256 to 1024",
        9,
    ),
    (
        "queues-zero",
        _domain(
            "<interface type='user'>\n  <model type='virtio'/><driver queues='0'/>\n</interface>"
        ),
        "/domain/devices/interface[1]/driver",
        "queues 0 must be from 1 to 256",
        9,
    ),
    (
        "queues-too-many",
        _domain(
            "<interface type='user'>\n  <model type='virtio'/><driver queues='257'/>\n</interface>"
        ),
        "/domain/devices/interface[1]/driver",
        "queues 257 must be from 1 to 256",
        9,
    ),
    (
        "queues-not-a-number",
        _domain(
            "<interface type='user'>\n  <model type='virtio'/><driver queues='two'/>\n</interface>"
        ),
        "/domain/devices/interface[1]/driver",
        "queues= 'two' is not a non-negative decimal integer",
        9,
    ),
    (
        "vhost-on-non-virtio",
        _domain(
            "<interface type='user'>\n  <model type='e1000'/>\n"
            "  <driver name='vhost'/>\n</interface>"
        ),
        "/domain/devices/interface[1]/driver",
        "driver name='vhost' needs a virtio model, not e1000",
        10,
    ),
    (
        "vhost-without-model",
        _domain("<interface type='user'>\n  <driver name='vhost'/>\n</interface>"),
        "/domain/devices/interface[1]/driver",
        "driver name='vhost' needs a virtio model, not none",
        9,
    ),
    (
        "vfio-on-emulated-nic",
        _domain(
            "<interface type='bridge'>\n  <source bridge='br0'/>\n"
            "  <driver name='vfio'/>\n</interface>"
        ),
        "/domain/devices/interface[1]/driver",
        "driver name='vfio' is only for hostdev interfaces",
        10,
    ),
    (
        "driver-name-unknown",
        _domain("<interface type='user'>\n  <driver name='vdpa'/>\n</interface>"),
        "/domain/devices/interface[1]/driver",
        "unknown driver name 'vdpa' (expected one of: qemu, vhost, vfio)",
        9,
    ),
    # -- teaming
    (
        "teaming-transient-without-persistent",
        _domain(
            f"<interface type='hostdev'>\n  {HOSTDEV_SOURCE}\n"
            "  <teaming type='transient'/>\n</interface>"
        ),
        "/domain/devices/interface[1]/teaming",
        "teaming type 'transient' needs persistent= naming the alias of the virtio interface",
        10,
    ),
    (
        "teaming-persistent-with-persistent",
        _domain(
            "<interface type='bridge'>\n  <source bridge='br0'/>\n  <model type='virtio'/>\n"
            "  <teaming type='persistent' persistent='ua-x'/>\n</interface>"
        ),
        "/domain/devices/interface[1]/teaming",
        "teaming type 'persistent' must not have a persistent= attribute",
        11,
    ),
    (
        "teaming-persistent-not-virtio",
        _domain(
            "<interface type='bridge'>\n  <source bridge='br0'/>\n  <model type='e1000e'/>\n"
            "  <teaming type='persistent'/>\n</interface>"
        ),
        "/domain/devices/interface[1]/teaming",
        "teaming type 'persistent' needs a virtio model, not e1000e",
        11,
    ),
    (
        "teaming-transient-not-hostdev-or-network",
        _domain(
            VIRTIO_PERSISTENT
            + "\n<interface type='bridge'>\n  <source bridge='br1'/>\n  <model type='virtio'/>\n"
            "  <teaming type='transient' persistent='ua-p'/>\n</interface>"
        ),
        "/domain/devices/interface[2]/teaming",
        "teaming type 'transient' needs an interface of type hostdev or network, or an "
        "emulated PCIe model (e1000e, igb) standing in for a VF in tests; not bridge with "
        "model virtio",
        18,
    ),
    (
        "teaming-standin-not-on-q35",
        _domain(
            VIRTIO_PERSISTENT
            + "\n<interface type='bridge'>\n  <source bridge='br1'/>\n  <model type='e1000e'/>\n"
            "  <teaming type='transient' persistent='ua-p'/>\n</interface>"
        ),
        "/domain/devices/interface[2]/model",
        "the failover stand-in model 'e1000e' needs a q35 machine: QEMU unplugs it from a "
        "pcie-root-port during migration",
        17,
    ),
    (
        "teaming-persistent-names-nothing",
        _domain(
            f"<interface type='hostdev'>\n  {HOSTDEV_SOURCE}\n"
            "  <teaming type='transient' persistent='ua-nothing'/>\n</interface>"
        ),
        "/domain/devices/interface[1]/teaming",
        "teaming persistent='ua-nothing' names no virtio interface with "
        "<teaming type='persistent'/> in this domain",
        10,
    ),
    (
        "teaming-persistent-names-nic-without-teaming",
        _domain(
            "<interface type='user'>\n  <model type='virtio'/>\n  <alias name='ua-v'/>\n"
            f"</interface>\n<interface type='hostdev'>\n  {HOSTDEV_SOURCE}\n"
            "  <teaming type='transient' persistent='ua-v'/>\n</interface>"
        ),
        "/domain/devices/interface[2]/teaming",
        "teaming persistent='ua-v' names no virtio interface",
        14,
    ),
    (
        "teaming-pair-with-two-macs",
        _domain(
            VIRTIO_PERSISTENT
            + f"\n<interface type='hostdev'>\n  <mac address='52:54:00:00:00:02'/>\n"
            f"  {HOSTDEV_SOURCE}\n  <teaming type='transient' persistent='ua-p'/>\n</interface>"
        ),
        "/domain/devices/interface[2]/mac",
        "MAC address 52:54:00:00:00:02 differs from 52:54:00:00:00:01 of its persistent "
        "interface 'ua-p'",
        16,
    ),
    (
        "teaming-type-unknown",
        _domain("<interface type='user'>\n  <teaming type='standby'/>\n</interface>"),
        "/domain/devices/interface[1]/teaming",
        "unknown teaming type 'standby' (expected one of: persistent, transient)",
        9,
    ),
    # -- what a hostdev interface may not have
    *(
        (
            f"hostdev-interface-with-{name}",
            _domain(f"<interface type='hostdev'>\n  {HOSTDEV_SOURCE}\n  {xml}\n</interface>"),
            f"/domain/devices/interface[1]/{where}",
            f"{what} is not allowed on a hostdev interface",
            10,
        )
        for name, xml, where, what in [
            ("driver-qemu", "<driver name='qemu'/>", "driver", "driver name='qemu'"),
            ("driver-vhost", "<driver name='vhost'/>", "driver", "driver name='vhost'"),
            ("queues", "<driver queues='2'/>", "driver", "driver queues="),
            ("rx-queue-size", "<driver rx_queue_size='256'/>", "driver", "driver rx_queue_size="),
            ("tx-queue-size", "<driver tx_queue_size='256'/>", "driver", "driver tx_queue_size="),
        ]
    ),
    (
        "hostdev-interface-without-source",
        _domain("<interface type='hostdev'>\n  <mac address='52:54:00:00:00:09'/>\n</interface>"),
        "/domain/devices/interface[1]/source",
        "a hostdev interface needs a <source> with a PCI <address>, a USB <address type='usb'>, "
        "or a USB <vendor> and <product>",
        8,
    ),
    (
        "hostdev-interface-pci-and-usb",
        _domain(
            "<interface type='hostdev'>\n  <source>\n    <vendor id='0x0b95'/>\n"
            "    <product id='0x1790'/>\n    <address type='pci' bus='0x3b'/>\n"
            "  </source>\n</interface>"
        ),
        "/domain/devices/interface[1]/source",
        "a hostdev source is a PCI address or a USB device, not both",
        9,
    ),
    (
        "hostdev-interface-vendor-without-product",
        _domain(
            "<interface type='hostdev'>\n  <source>\n    <vendor id='0x0b95'/>\n"
            "  </source>\n</interface>"
        ),
        "/domain/devices/interface[1]/source",
        "a USB <vendor> id needs a <product> id, and the other way round",
        9,
    ),
    (
        "hostdev-interface-vendor-out-of-range",
        _domain(
            "<interface type='hostdev'>\n  <source>\n    <vendor id='0x10000'/>\n"
            "    <product id='0x1'/>\n  </source>\n</interface>"
        ),
        "/domain/devices/interface[1]/source/vendor",
        "USB vendor id 0x10000 is out of range (0 to 0xffff)",
        10,
    ),
    (
        "hostdev-interface-usb-address-without-device",
        _domain(
            "<interface type='hostdev'>\n  <source>\n    <address type='usb' bus='1'/>\n"
            "  </source>\n</interface>"
        ),
        "/domain/devices/interface[1]/source/address",
        "<address> needs the device= attribute",
        10,
    ),
    (
        "hostdev-interface-source-address-type-unknown",
        _domain(
            "<interface type='hostdev'>\n  <source>\n    <address type='ccw' cssid='0xfe'/>\n"
            "  </source>\n</interface>"
        ),
        "/domain/devices/interface[1]/source/address",
        "unknown source address type 'ccw' (expected pci or usb)",
        10,
    ),
    (
        "managed-on-emulated-nic",
        _domain("<interface type='user' managed='yes'/>"),
        "/domain/devices/interface[1]",
        "managed= is only for hostdev interfaces",
        8,
    ),
    (
        "managed-not-yes-or-no",
        _domain(f"<interface type='hostdev' managed='maybe'>\n  {HOSTDEV_SOURCE}\n</interface>"),
        "/domain/devices/interface[1]",
        "managed='maybe' must be 'yes' or 'no'",
        8,
    ),
    # -- sources and host names
    (
        "bridge-without-source",
        _domain("<interface type='bridge'>\n  <model type='virtio'/>\n</interface>"),
        "/domain/devices/interface[1]/source",
        "an interface of type 'bridge' needs <source bridge='…'/>",
        8,
    ),
    (
        "network-without-source-network",
        _domain("<interface type='network'>\n  <source/>\n</interface>"),
        "/domain/devices/interface[1]/source",
        "an interface of type 'network' needs <source network='…'/>",
        9,
    ),
    (
        "bridge-name-too-long",
        _domain(
            "<interface type='bridge'>\n  <source bridge='bridge-name-too-long'/>\n</interface>"
        ),
        "/domain/devices/interface[1]/source",
        "interface name 'bridge-name-too-long' must be 1 to 15 bytes",
        9,
    ),
    (
        "target-dev-with-slash",
        _domain("<interface type='ethernet'>\n  <target dev='tap/0'/>\n</interface>"),
        "/domain/devices/interface[1]/target",
        "interface name 'tap/0' has a forbidden character",
        9,
    ),
    # -- other interface parts
    (
        "link-state-unknown",
        _domain("<interface type='user'>\n  <link state='sideways'/>\n</interface>"),
        "/domain/devices/interface[1]/link",
        "unknown link state 'sideways' (expected one of: up, down)",
        9,
    ),
    (
        "mtu-zero",
        _domain("<interface type='user'>\n  <mtu size='0'/>\n</interface>"),
        "/domain/devices/interface[1]/mtu",
        "mtu size 0 must be 1 or more",
        9,
    ),
    (
        "mtu-not-a-number",
        _domain("<interface type='user'>\n  <mtu size='-1'/>\n</interface>"),
        "/domain/devices/interface[1]/mtu",
        "size= '-1' is not a non-negative decimal integer",
        9,
    ),
    (
        "element-inside-flattened-element",
        _domain(
            "<interface type='user'>\n  <mac address='52:54:00:00:00:01'>\n    <oops/>\n"
            "  </mac>\n</interface>"
        ),
        "/domain/devices/interface[1]/mac/oops",
        "unexpected <oops> inside <mac>",
        10,
    ),
    (
        "element-given-twice",
        _domain(
            "<interface type='user'>\n  <mac address='52:54:00:00:00:01'/>\n"
            "  <mac address='52:54:00:00:00:02'/>\n</interface>"
        ),
        "/domain/devices/interface[1]/mac",
        "<mac> is given more than once in <interface>",
        10,
    ),
    # -- hostdev, serial, controllers
    (
        "hostdev-without-source",
        _domain("<hostdev mode='subsystem' type='pci' managed='yes'/>"),
        "/domain/devices/hostdev[1]",
        "<hostdev> needs a <source> with the host PCI <address>",
        8,
    ),
    (
        "serial-file-without-path",
        _domain("<serial type='file'>\n  <target port='0'/>\n</serial>"),
        "/domain/devices/serial[1]/source",
        "a serial port of type 'file' needs <source path='…'/>",
        8,
    ),
    (
        "controller-index-duplicate",
        _domain(
            "<controller type='pci' index='0' model='pcie-root'/>\n"
            "<controller type='pci' index='1' model='pcie-root-port'/>\n"
            "<controller type='pci' index='1' model='pcie-root-port'/>"
        ),
        "/domain/devices/controller[3]",
        "PCI controller index 1 is already used by /domain/devices/controller[2]",
        10,
    ),
    (
        "controller-root-not-at-index-0",
        _domain("<controller type='pci' index='1' model='pcie-root'/>"),
        "/domain/devices/controller[1]",
        "a pcie-root controller is the root bus and must have index 0",
        8,
    ),
    (
        "controller-index-0-not-root",
        _domain("<controller type='pci' index='0' model='pci-bridge'/>"),
        "/domain/devices/controller[1]",
        "PCI controller index 0 is the root bus (pci-root or pcie-root), not pci-bridge",
        8,
    ),
    (
        "controller-model-unknown",
        _domain("<controller type='pci' index='0' model='pcie-rooot'/>"),
        "/domain/devices/controller[1]",
        "unknown PCI controller model 'pcie-rooot'",
        8,
    ),
    (
        "controller-without-index",
        _domain("<controller type='pci' model='pcie-root'/>"),
        "/domain/devices/controller[1]",
        "<controller> needs the index= attribute",
        8,
    ),
    # -- the domain itself
    (
        "domain-type-unknown",
        _domain().replace("type='qemu'", "type='xen'"),
        "/domain",
        "unknown domain type 'xen' (expected one of: qemu, kvm)",
        1,
    ),
    (
        "domain-type-missing",
        _domain().replace(" type='qemu'", ""),
        "/domain",
        "<domain> needs the type= attribute",
        1,
    ),
    (
        "domain-name-missing",
        _domain().replace("  <name>t</name>\n", ""),
        "/domain/name",
        "<domain> is missing <name>",
        1,
    ),
    (
        "domain-name-with-slash",
        _domain().replace("<name>t</name>", "<name>a/b</name>"),
        "/domain/name",
        "domain name 'a/b' is not usable (a letter or digit, then letters",
        2,
    ),
    (
        "domain-name-with-trailing-newline",
        _domain().replace("<name>t</name>", "<name>t&#10;</name>"),
        "/domain/name",
        "domain name 't\\n' is not usable",
        2,
    ),
    (
        "domain-name-with-space",
        _domain().replace("<name>t</name>", "<name>my vm</name>"),
        "/domain/name",
        "domain name 'my vm' is not usable",
        2,
    ),
    (
        "domain-name-empty",
        _domain().replace("<name>t</name>", "<name/>"),
        "/domain/name",
        "domain name '' is not usable",
        2,
    ),
    (
        "domain-name-twice",
        _domain().replace("<name>t</name>", "<name>t</name><name>u</name>"),
        "/domain/name",
        "<name> is given more than once in <domain>",
        2,
    ),
    (
        "memory-missing",
        _domain().replace("  <memory unit='MiB'>64</memory>\n", ""),
        "/domain/memory",
        "<domain> is missing <memory>",
        1,
    ),
    (
        "memory-zero",
        _domain().replace("<memory unit='MiB'>64</memory>", "<memory>0</memory>"),
        "/domain/memory",
        "memory must be more than 0",
        3,
    ),
    (
        "memory-not-a-number",
        _domain().replace(">64<", ">lots<"),
        "/domain/memory",
        "memory 'lots' is not a non-negative decimal integer",
        3,
    ),
    (
        "memory-unit-unknown",
        _domain().replace("unit='MiB'", "unit='pages'"),
        "/domain/memory",
        "unknown memory unit 'pages'",
        3,
    ),
    (
        "vcpu-zero",
        _domain().replace("  <os>", "  <vcpu>0</vcpu>\n  <os>"),
        "/domain/vcpu",
        "vcpu count must be 1 or more",
        4,
    ),
    (
        "vcpu-current-above-count",
        _domain().replace("  <os>", "  <vcpu current='3'>2</vcpu>\n  <os>"),
        "/domain/vcpu",
        "vcpu current=3 must be from 1 to the count 2",
        4,
    ),
    (
        "os-missing",
        _domain().replace("  <os>\n    <type>hvm</type>\n  </os>\n", ""),
        "/domain/os",
        "<domain> is missing <os>",
        1,
    ),
    (
        "os-type-not-hvm",
        _domain().replace("<type>hvm</type>", "<type>exe</type>"),
        "/domain/os/type",
        "OS type 'exe' is not 'hvm'",
        5,
    ),
    (
        "initrd-without-kernel",
        _domain().replace("<type>hvm</type>", "<type>hvm</type><initrd>/i</initrd>"),
        "/domain/os/initrd",
        "<initrd> needs a <kernel>",
        5,
    ),
    (
        "cmdline-without-kernel",
        _domain().replace("<type>hvm</type>", "<type>hvm</type><cmdline>quiet</cmdline>"),
        "/domain/os/cmdline",
        "<cmdline> needs a <kernel>",
        5,
    ),
    (
        "uuid-malformed",
        _domain().replace("  <memory", "  <uuid>not-a-uuid</uuid>\n  <memory"),
        "/domain/uuid",
        "malformed UUID 'not-a-uuid'",
        3,
    ),
    # -- network pools
    (
        "network-without-forward",
        _network("<bridge name='br0'/>"),
        "/network/forward",
        "a network pool needs <forward mode='bridge'> or <forward mode='hostdev'>",
        1,
    ),
    (
        "network-forward-mode-unsupported",
        _network("<forward mode='nat'/>\n<bridge name='virbr0'/>"),
        "/network/forward",
        "unknown forward mode 'nat' (expected one of: bridge, hostdev)",
        3,
    ),
    (
        "network-forward-without-mode",
        _network("<forward/>\n<bridge name='br0'/>"),
        "/network/forward",
        "<forward> needs the mode= attribute",
        3,
    ),
    (
        "network-bridge-mode-without-bridge",
        _network("<forward mode='bridge'/>"),
        "/network/bridge",
        "forward mode 'bridge' needs <bridge name='…'/>",
        1,
    ),
    (
        "network-bridge-mode-with-pf",
        _network("<forward mode='bridge'>\n  <pf dev='eth2'/>\n</forward>\n<bridge name='br0'/>"),
        "/network/forward",
        "forward mode 'bridge' takes no <pf> or <address> elements",
        3,
    ),
    (
        "network-hostdev-pf-and-addresses",
        _network(
            "<forward mode='hostdev'>\n  <pf dev='eth2'/>\n"
            "  <address type='pci' bus='0x3b' slot='0x02' function='0x1'/>\n</forward>"
        ),
        "/network/forward",
        "forward mode 'hostdev' takes one <pf> or a list of <address> elements, not both",
        3,
    ),
    (
        "network-hostdev-without-devices",
        _network("<forward mode='hostdev' managed='yes'/>"),
        "/network/forward",
        "forward mode 'hostdev' needs a <pf dev='…'/> or at least one PCI <address>",
        3,
    ),
    (
        "network-hostdev-with-bridge",
        _network("<forward mode='hostdev'>\n  <pf dev='eth2'/>\n</forward>\n<bridge name='br0'/>"),
        "/network/bridge",
        "forward mode 'hostdev' takes no <bridge>",
        6,
    ),
    (
        "network-hostdev-two-pfs",
        _network("<forward mode='hostdev'>\n  <pf dev='eth2'/>\n  <pf dev='eth3'/>\n</forward>"),
        "/network/forward/pf",
        "<pf> is given more than once in <forward>",
        5,
    ),
    (
        "network-hostdev-pf-without-dev",
        _network("<forward mode='hostdev'>\n  <pf/>\n</forward>"),
        "/network/forward/pf",
        "<pf> needs the dev= attribute",
        4,
    ),
    (
        "network-hostdev-address-duplicate",
        _network(
            "<forward mode='hostdev'>\n"
            "  <address type='pci' bus='0x3b' slot='0x02' function='0x1'/>\n"
            "  <address type='pci' bus='0x3b' slot='0x02' function='0x1'/>\n</forward>"
        ),
        "/network/forward/address[2]",
        "PCI address 0000:3b:02.1 is already listed as address[1]",
        5,
    ),
    (
        "network-hostdev-address-out-of-range",
        _network(
            "<forward mode='hostdev'>\n"
            "  <address type='pci' bus='0x3b' slot='0x40' function='0x1'/>\n</forward>"
        ),
        "/network/forward/address[1]",
        "PCI slot 0x40 is out of range (0 to 0x1f)",
        4,
    ),
    (
        "network-hostdev-address-not-pci",
        _network(
            "<forward mode='hostdev'>\n  <address type='usb' bus='1' device='2'/>\n</forward>"
        ),
        "/network/forward/address[1]",
        "unknown address type 'usb' (expected pci)",
        4,
    ),
    (
        "network-name-missing",
        "<network>\n  <forward mode='bridge'/>\n  <bridge name='br0'/>\n</network>\n",
        "/network/name",
        "<network> is missing <name>",
        1,
    ),
    # -- disks
    (
        "disk-without-target",
        _domain("<disk type='file'>\n  <source file='/a.img'/>\n</disk>"),
        "/domain/devices/disk[1]/target",
        "<disk> is missing <target>",
        8,
    ),
    (
        "disk-without-source",
        _domain("<disk type='file' device='disk'>\n  <target dev='vda'/>\n</disk>"),
        "/domain/devices/disk[1]/source",
        "a disk of type 'file' needs <source file='…'/>",
        8,
    ),
    (
        "disk-block-without-source",
        _domain("<disk type='block'>\n  <source file='/a'/>\n  <target dev='vda'/>\n</disk>"),
        "/domain/devices/disk[1]/source",
        "a disk of type 'block' needs <source dev='…'/>",
        9,
    ),
    (
        "disk-bus-unknown",
        _domain(
            "<disk type='file'>\n  <source file='/a'/>\n  <target dev='vda' bus='ide'/>\n</disk>"
        ),
        "/domain/devices/disk[1]/target",
        "unknown disk bus 'ide' (expected one of: virtio, sata, scsi)",
        10,
    ),
    (
        "disk-bus-not-implied",
        _domain("<disk type='file'>\n  <source file='/a'/>\n  <target dev='hda'/>\n</disk>"),
        "/domain/devices/disk[1]/target",
        "disk target 'hda' needs bus='virtio', 'sata' or 'scsi'",
        10,
    ),
    (
        "disk-format-unknown",
        _domain(
            "<disk type='file'>\n  <driver name='qemu' type='vmdk'/>\n  <source file='/a'/>\n"
            "  <target dev='vda'/>\n</disk>"
        ),
        "/domain/devices/disk[1]/driver",
        "unknown disk format 'vmdk' (expected one of: raw, qcow2)",
        9,
    ),
    (
        "disk-driver-not-qemu",
        _domain(
            "<disk type='file'>\n  <driver name='tap'/>\n  <source file='/a'/>\n"
            "  <target dev='vda'/>\n</disk>"
        ),
        "/domain/devices/disk[1]/driver",
        "disk driver name 'tap' is not 'qemu'",
        9,
    ),
    (
        "disk-cdrom-on-virtio",
        _domain("<disk type='file' device='cdrom'>\n  <target dev='vda'/>\n</disk>"),
        "/domain/devices/disk[1]/target",
        "a cdrom cannot be on bus 'virtio'",
        9,
    ),
    (
        "disk-sata-readonly",
        _domain(
            "<disk type='file'>\n  <source file='/a'/>\n  <target dev='sda' bus='sata'/>\n"
            "  <readonly/>\n</disk>"
        ),
        "/domain/devices/disk[1]/readonly",
        "a sata disk cannot be <readonly/>",
        11,
    ),
    (
        "disk-virtio-drive-address",
        _domain(
            "<disk type='file'>\n  <source file='/a'/>\n  <target dev='vda'/>\n"
            "  <address type='drive' unit='1'/>\n</disk>"
        ),
        "/domain/devices/disk[1]/address",
        "a virtio disk has a PCI address, not type='drive'",
        11,
    ),
    (
        "disk-scsi-pci-address",
        _domain(
            "<disk type='file'>\n  <source file='/a'/>\n  <target dev='sda'/>\n"
            "  <address type='pci' slot='5'/>\n</disk>"
        ),
        "/domain/devices/disk[1]/address",
        "only a virtio disk has a PCI address",
        11,
    ),
    (
        "disk-target-twice",
        _domain(
            "<disk type='file'>\n  <source file='/a'/>\n  <target dev='vda'/>\n</disk>\n"
            "<disk type='file'>\n  <source file='/b'/>\n  <target dev='vda'/>\n</disk>"
        ),
        "/domain/devices/disk[2]/target",
        "disk target 'vda' is already used by /domain/devices/disk[1]",
        14,
    ),
    (
        "disk-boot-order-clash",
        _domain(
            "<disk type='file'>\n  <source file='/a'/>\n  <target dev='vda'/>\n"
            "  <boot order='1'/>\n</disk>\n"
            "<interface type='user'>\n  <boot order='1'/>\n</interface>"
        ),
        "/domain/devices/interface[1]/boot",
        "boot order 1 is already used by /domain/devices/disk[1]",
        14,
    ),
    (
        "disk-controller-index-twice",
        _domain("<controller type='scsi' index='0'/>\n<controller type='scsi' index='0'/>"),
        "/domain/devices/controller[2]",
        "scsi controller index 0 is already used by /domain/devices/controller[1]",
        9,
    ),
    # -- serial ports
    (
        "serial-unix-without-path",
        _domain("<serial type='unix'>\n  <source mode='bind'/>\n</serial>"),
        "/domain/devices/serial[1]/source",
        "a serial port of type 'unix' needs <source path='…'/>",
        9,
    ),
    (
        "serial-unix-bad-mode",
        _domain("<serial type='unix'>\n  <source mode='listen' path='/s'/>\n</serial>"),
        "/domain/devices/serial[1]/source",
        "source mode='listen': only a unix serial port has a mode, 'bind' or 'connect'",
        9,
    ),
    # -- documents
    (
        "root-unknown",
        "<pool type='dir'/>",
        "/pool",
        "expected a <domain> or <network> or <interface> or <hostdev> document, not <pool>",
        1,
    ),
    (
        "lone-hostdev-not-pci",
        "<hostdev mode='subsystem' type='usb'>\n  <source><vendor id='1'/></source>\n</hostdev>",
        "/hostdev",
        "<hostdev> of this kind is not supported",
        1,
    ),
]


@pytest.mark.parametrize(
    ("document", "path", "fragment", "line"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_problem_is_reported(document: str, path: str, fragment: str, line: int) -> None:
    problems = check(document, source="bad.xml")
    assert len(problems) == 1, "\n".join(map(str, problems))
    problem = problems[0]
    assert isinstance(problem, ValidationError)
    assert fragment in problem.message
    assert (problem.line, problem.path) == (line, path)
    assert str(problem).startswith(f"bad.xml:{line}: {path}: ")


def test_case_ids_are_unique() -> None:
    assert len({case[0] for case in CASES}) == len(CASES)


def test_parse_raises_the_first_problem() -> None:
    document = _domain(
        "<interface type='user'>\n  <mac address='01:00:5e:00:00:01'/>\n</interface>\n"
        "<interface type='user'>\n  <alias name='net0'/>\n</interface>"
    )
    with pytest.raises(ValidationError) as info:
        parse_domain(document, source="bad.xml")
    assert str(info.value) == (
        "bad.xml:9: /domain/devices/interface[1]/mac: "
        "multicast MAC address 01:00:5e:00:00:01 is not allowed for a NIC"
    )


def test_check_reports_every_problem_in_line_order() -> None:
    document = _domain(
        "<interface type='direct'/>\n"
        "<interface type='user'>\n  <mac address='01:00:5e:00:00:01'/>\n"
        "  <driver queues='x' rx_queue_size='100'/>\n</interface>\n"
        "<controller type='pci' index='zero' model='pcie-root'/>"
    ).replace("<memory unit='MiB'>64</memory>", "<memory unit='furlongs'>64</memory>")
    problems = check(document, source="bad.xml")
    assert [(p.line, p.path) for p in problems] == [
        (3, "/domain/memory"),
        (8, "/domain/devices/interface[1]"),
        (10, "/domain/devices/interface[2]/mac"),
        (11, "/domain/devices/interface[2]/driver"),
        (13, "/domain/devices/controller[1]"),
    ]
    # The stand-in for the broken memory is not reported a second time.
    assert not any("more than 0" in p.message for p in problems)


def test_live_xml_allows_qctl_aliases_but_not_bad_ids() -> None:
    document = _domain(
        "<interface type='user'>\n  <alias name='net0'/>\n</interface>\n"
        "<hostdev type='pci'>\n  <source><address bus='1'/></source>\n"
        "  <alias name='hostdev0'/>\n</hostdev>"
    )
    assert check(document) != []
    assert check(document, live=True) == []
    defn = parse_domain(document, live=True)
    assert [d.alias for d in (*defn.interfaces, *defn.hostdevs)] == ["net0", "hostdev0"]
    bad = document.replace("net0", "0net")
    (problem,) = check(bad, live=True)
    assert "alias '0net' is not a valid device id" in problem.message
    user = document.replace("net0", "ua-a.b")
    (problem,) = check(user, live=True)
    assert "must be 'ua-' followed by" in problem.message


# -- validating definitions built in code (hot-plug) ------------------------------------------


def _virtio(alias: str, mac: str, **changes: object) -> InterfaceDef:
    iface = InterfaceDef(
        type=InterfaceType.USER, model="virtio", alias=alias, mac=MACAddress.parse(mac)
    )
    return replace(iface, **changes)


def _live_domain(*devices: InterfaceDef | HostdevDef | ControllerDef | SerialDef) -> DomainDef:
    return DomainDef(
        type=DomainType.QEMU,
        name="live",
        memory=MemoryDef(64, "MiB"),
        os=OSDef(),
        devices=DevicesDef(items=devices),
    )


LIVE = _live_domain(
    _virtio("ua-a", "52:54:00:00:00:01", teaming=TeamingDef(type=TeamingType.PERSISTENT)),
    HostdevDef(source=PCIAddress(0, 0x3B, 2, 1), alias="hostdev0", address=PCIAddress(0, 5, 0, 0)),
    ControllerDef(index=0, model=ControllerModel.PCIE_ROOT),
    SerialDef(type=SerialType.PTY),
)


def test_live_domain_built_in_code_is_valid() -> None:
    assert validate_domain(LIVE, live=True) == []


def test_hotplug_clashes_are_found() -> None:
    new = _virtio("hostdev0", "52:54:00:00:00:01", address=PCIAddress(0, 5, 0, 0), boot_order=0)
    found = review_device(new, LIVE, source="attach", live=True)
    assert [(p.path, p.message) for p in found.errors] == [
        ("/interface/boot", "boot order 0 must be 1 or more"),
        ("/interface/alias", "alias 'hostdev0' is already used by /domain/devices/hostdev[1]"),
        (
            "/interface/address",
            "guest PCI address 0000:05:00.0 is already used by /domain/devices/hostdev[1]",
        ),
    ]
    # A MAC used twice is a warning (libvirt accepts it). Built in code, so there is no
    # line: the message still names the source and element.
    (warning,) = found.warnings
    assert str(warning) == (
        "attach: /interface/mac: "
        "MAC address 52:54:00:00:00:01 is already used by /domain/devices/interface[1]"
    )


def test_hotplug_failover_half_needs_its_peer_in_the_domain() -> None:
    transient = InterfaceDef(
        type=InterfaceType.HOSTDEV,
        mac=MACAddress.parse("52:54:00:00:00:01"),
        source=InterfaceSourceDef(pci=PCIAddress(0, 0x3B, 2, 2)),
        teaming=TeamingDef(type=TeamingType.TRANSIENT, persistent="ua-a"),
        alias="ua-vf",
    )
    assert validate_device(transient, LIVE) == []  # same MAC as its peer is how failover works
    (problem,) = validate_device(transient, _live_domain())
    assert problem.path == "/interface/teaming"
    assert "names no virtio interface" in problem.message
    assert problem.line is None


def test_a_device_is_not_compared_with_itself() -> None:
    iface = LIVE.interfaces[0]
    assert validate_device(iface, LIVE, live=True) == []


def test_parse_device_checks_the_device_alone() -> None:
    document = (
        "<interface type='hostdev'>\n  <source><address type='pci' bus='1'/></source>\n"
        "  <teaming type='transient' persistent='ua-elsewhere'/>\n</interface>"
    )
    iface = parse_device(document)  # the peer is checked once the domain is known
    assert isinstance(iface, InterfaceDef)
    (problem,) = validate_device(iface, LIVE)
    assert isinstance(problem, ConfigError)
    assert "names no virtio interface" in problem.message


# -- issue 12: what libvirt gets right ------------------------------------------------------

HOSTDEV_0500 = (
    "<hostdev mode='subsystem' type='pci'>\n"
    "  <source><address domain='0x0000' bus='0x05' slot='0x00' function='0x0'/></source>\n"
    "</hostdev>"
)


def test_the_same_host_device_twice_is_refused() -> None:
    (problem,) = check(_domain(HOSTDEV_0500 + "\n" + HOSTDEV_0500), source="dom.xml")
    assert str(problem) == (
        "dom.xml:12: /domain/devices/hostdev[2]/source: host PCI device 0000:05:00.0 already "
        "exists in the domain: it is assigned by /domain/devices/hostdev[1] too"
    )
    # hot-plugging a hostdev interface on a device the domain already has is refused too
    domain = parse_domain(_domain(HOSTDEV_0500))
    iface = parse_device(
        "<interface type='hostdev'><source><address type='pci' bus='5'/></source></interface>"
    )
    (problem,) = validate_device(iface, domain)
    assert problem.path == "/interface/source" and "already exists" in problem.message


def test_a_hostdev_can_be_the_transient_half_of_a_failover_pair() -> None:
    virtio = (
        "<interface type='user'>\n  <model type='virtio'/><teaming type='persistent'/>\n"
        "  <alias name='ua-backup0'/>\n</interface>\n"
    )
    transient = HOSTDEV_0500.replace(
        "</hostdev>", "  <teaming type='transient' persistent='ua-backup0'/>\n</hostdev>"
    )
    domain = parse_domain(_domain(virtio + transient))
    assert domain.hostdevs[0].teaming == TeamingDef(
        type=TeamingType.TRANSIENT, persistent="ua-backup0"
    )
    (problem,) = check(_domain(transient), source="dom.xml")
    assert problem.path == "/domain/devices/hostdev[1]/teaming"
    assert "names no virtio interface" in problem.message
    persistent = HOSTDEV_0500.replace("</hostdev>", "  <teaming type='persistent'/>\n</hostdev>")
    (problem,) = check(_domain(persistent), source="dom.xml")
    assert "can only be the transient half" in problem.message


def test_known_models_are_matched_case_insensitively() -> None:
    domain = parse_domain(
        _domain(
            "<interface type='user'>\n  <model type='VIRTIO'/><teaming type='persistent'/>\n"
            "  <driver name='vhost' queues='2'/>\n  <alias name='ua-a'/>\n</interface>\n"
            "<interface type='user'>\n  <model type='E1000E'/>\n</interface>\n"
            "<interface type='user'>\n  <model type='my-own-NIC'/>\n</interface>"
        )
    )
    assert [i.model for i in domain.interfaces] == ["virtio", "e1000e", "my-own-NIC"]
    assert domain.interfaces[0].is_virtio


def test_an_empty_pci_address_means_assign_one_and_is_kept_by_format() -> None:
    document = _domain(
        "<interface type='user'>\n  <address type='pci'/>\n</interface>\n"
        + HOSTDEV_0500.replace("</hostdev>", "  <address type='pci'/>\n</hostdev>")
    )
    domain = parse_domain(document)
    assert [d.address for d in (*domain.interfaces, *domain.hostdevs)] == [None, None]
    assert all(d.auto_address for d in (*domain.interfaces, *domain.hostdevs))
    assert format_xml(domain).count('<address type="pci"/>') == 2


def test_an_unassigned_hostdev_is_read_and_not_hot_plugged() -> None:
    document = HOSTDEV_0500.replace("</hostdev>", "  <address type='unassigned'/>\n</hostdev>")
    domain = parse_domain(_domain(document))
    assert domain.hostdevs[0].unassigned and domain.hostdevs[0].address is None
    assert '<address type="unassigned"/>' in format_xml(domain)
    lone = parse_device(document, source="attach.xml")  # as the ledger keeps it: fine
    (problem,) = validate_device(lone, parse_domain(_domain("")), source="attach.xml")
    assert str(problem) == (
        "attach.xml:3: /hostdev/address: hot-plugging a <hostdev> with "
        "<address type='unassigned'/> is not supported by qctl"
    )
    both = document.replace("</hostdev>", "  <address type='pci' slot='3'/>\n</hostdev>")
    (problem,) = check(_domain(both))
    assert "type 'unassigned' or type 'pci', not both" in problem.message


def test_a_usb_net_nic_takes_no_pci_address() -> None:
    (problem,) = check(
        _domain(
            "<interface type='user'>\n  <model type='usb-net'/>\n"
            "  <address type='pci' slot='3'/>\n</interface>"
        )
    )
    assert problem.path == "/domain/devices/interface[1]/address"
    assert "usb-net NIC sits on the guest's USB bus" in problem.message


def test_a_vlan_is_read_and_checked() -> None:
    iface = parse_device(
        "<interface type='hostdev'><source><address type='pci' bus='5'/></source>"
        "<vlan><tag id='42'/></vlan></interface>"
    )
    assert isinstance(iface, InterfaceDef) and iface.vlan is not None
    assert [t.id for t in iface.vlan.tags] == [42]
    (problem,) = check(
        "<interface type='hostdev'><source><address type='pci' bus='5'/></source>\n"
        "<vlan><tag id='4096'/></vlan></interface>"
    )
    assert problem.line == 2 and "VLAN tag id 4096 is out of range" in problem.message
    (problem,) = check(
        "<interface type='hostdev'><source><address type='pci' bus='5'/></source>\n"
        "<vlan/></interface>"
    )
    assert "<vlan> needs at least one <tag id='…'/>" in problem.message


def test_a_pool_vlan_is_for_hostdev_pools_and_one_tag() -> None:
    pool = _network(
        "<forward mode='hostdev'><pf dev='eth9'/></forward>\n<vlan><tag id='7'/></vlan>"
    )
    assert check(pool) == []
    trunk = pool.replace("<vlan>", "<vlan trunk='yes'>")
    (problem,) = check(trunk, source="net.xml")
    assert str(problem) == (
        "net.xml:4: /network/vlan: <vlan> with trunk=, nativeMode= or several tags is not "
        "supported by qctl (a VF takes one tag)"
    )
    bridge = _network("<forward mode='bridge'/>\n<bridge name='br0'/>\n<vlan><tag id='7'/></vlan>")
    (problem,) = check(bridge)
    assert "<vlan> on a bridge pool is not supported by qctl" in problem.message


# -- what a start needs beyond the rules: devices qctl creates, disk images that exist ------


def test_devices_not_created_are_named_with_their_line() -> None:
    defn = parse_domain(
        _domain(
            "<memballoon model='none'/>\n<video>\n  <model type='vga'/>\n</video>\n"
            "<serial type='pty'/>\n<console type='pty'>\n  <target type='serial' port='0'/>\n"
            "</console>\n<!-- a comment -->\n<controller type='usb' model='none'/>\n"
            "<controller type='usb' model='qemu-xhci'/>\n<channel type='unix'/>"
        ),
        source="dom.xml",
    )
    problems = not_created(defn, source="dom.xml")
    assert [str(p).split(" is not created")[0] for p in problems] == [
        "dom.xml:9: /domain/devices/video[1]: <video>",
        "dom.xml:18: /domain/devices/controller[2]: <controller type=\"usb\" model=\"qemu-xhci\">",
        "dom.xml:19: /domain/devices/channel[1]: <channel type=\"unix\">",
    ]
    assert all(CREATED_DEVICES in p.message for p in problems)


def test_a_console_without_a_serial_port_is_not_created() -> None:
    defn = parse_domain(_domain("<console type='pty'/>"))
    (problem,) = not_created(defn)
    assert problem.path == "/domain/devices/console[1]" and problem.line == DEVICES_LINE


def test_missing_disk_images_are_named_with_file_and_line(tmp_path: Path) -> None:
    image = tmp_path / "root.img"
    image.write_bytes(b"")
    defn = parse_domain(
        _domain(
            f"<disk type='file'>\n  <source file='{image}'/>\n  <target dev='vda'/>\n</disk>\n"
            f"<disk type='file'>\n  <source file='{tmp_path}/gone.qcow2'/>\n"
            "  <target dev='vdb'/>\n</disk>\n"
            "<disk type='block' device='cdrom'>\n  <target dev='sda'/>\n</disk>\n"
            "<disk type='block'>\n  <source dev='/dev/qctl-no-such-disk'/>\n"
            "  <target dev='sdb'/>\n</disk>"
        )
    )
    assert [str(p) for p in missing_images(defn, source="dom.xml")] == [
        f"dom.xml:13: /domain/devices/disk[2]/source: disk vdb: image file "
        f"'{tmp_path}/gone.qcow2' does not exist",
        "dom.xml:20: /domain/devices/disk[4]/source: disk sdb: block device "
        "'/dev/qctl-no-such-disk' does not exist",
    ]


def test_disk_parts_not_applied_are_named() -> None:
    defn = parse_domain(
        (Path(__file__).parent / "data" / "roundtrip" / "domain-disks.xml").read_text(),
        source="disks.xml",
    )
    assert [str(p) for p in not_created(defn, source="disks.xml")] == [
        "disks.xml:9: /domain/devices/disk[1]/driver: <driver cache=…> is not applied by qctl; "
        "remove it",
        "disks.xml:22: /domain/devices/disk[2]/iotune: <iotune> is not applied by qctl; remove it",
        "disks.xml:29: /domain/devices/disk[4]: <disk type=\"file\" device=\"floppy\"> is not "
        "created by qctl, so QEMU would not get it; remove it (qctl creates: "
        + CREATED_DEVICES
        + ")",
        "disks.xml:36: /domain/devices/controller[2]: ports= is not applied by qctl; remove it",
    ]


@pytest.mark.parametrize("model", ["e1000e", "igb"])
def test_emulated_failover_standin_is_allowed_on_q35(model: str) -> None:
    document = _domain(
        VIRTIO_PERSISTENT
        + f"\n<interface type='ethernet'>\n  <model type='{model}'/>\n"
        "  <teaming type='transient' persistent='ua-p'/>\n</interface>"
    ).replace("<type>hvm</type>", "<type machine='q35'>hvm</type>")
    assert check(document, source="ok.xml") == []
