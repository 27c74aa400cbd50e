"""Live device types: the definition unchanged, the alias always set."""

from __future__ import annotations

import pytest

from qctl.conf import (
    HostdevDef,
    InterfaceDef,
    LiveHostdev,
    LiveInterface,
    as_live,
    def_to_dict,
    format_xml,
    parse_device,
)

IFACE = (
    "<interface type='bridge'><mac address='52:54:00:00:00:01'/><source bridge='br0'/>"
    "<model type='virtio'/><alias name='ua-nic'/></interface>"
)
HOSTDEV = (
    "<hostdev mode='subsystem' type='pci' managed='yes'><source>"
    "<address domain='0x0000' bus='0x03' slot='0x00' function='0x1'/></source>"
    "<alias name='ua-vf'/></hostdev>"
)


def test_an_interface_keeps_every_field_and_its_xml() -> None:
    defn = parse_device(IFACE)
    assert isinstance(defn, InterfaceDef)
    live = as_live(defn)
    assert isinstance(live, LiveInterface) and isinstance(live, InterfaceDef)
    assert live.alias == "ua-nic" and live.mac == defn.mac and live.source == defn.source
    assert format_xml(live) == format_xml(defn)
    assert def_to_dict(live) == def_to_dict(defn)  # "kind" included


def test_a_hostdev_becomes_a_live_hostdev() -> None:
    defn = parse_device(HOSTDEV)
    assert isinstance(defn, HostdevDef)
    live = as_live(defn)
    assert isinstance(live, LiveHostdev) and live.alias == "ua-vf"
    assert def_to_dict(live)["kind"] == "hostdev"


def test_a_device_without_alias_is_not_live() -> None:
    defn = parse_device(IFACE.replace("<alias name='ua-nic'/>", ""))
    assert isinstance(defn, InterfaceDef)
    with pytest.raises(ValueError, match="without an alias"):
        as_live(defn)
