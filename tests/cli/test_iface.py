"""``attach-interface``'s options become the <interface> virsh would build."""

from __future__ import annotations

import pytest

from qctl import ConfigError, InterfaceType, parse_device
from qctl.cli.iface_cmd import interface_xml


def test_a_bridge_nic_with_every_option() -> None:
    xml = interface_xml(
        "bridge", "br0", model="virtio", mac="52:54:00:00:00:02", alias="ua-a", target="tap7"
    )
    nic = parse_device(xml)
    assert nic.type is InterfaceType.BRIDGE  # type: ignore[union-attr]
    assert str(nic.source.bridge) == "br0"  # type: ignore[union-attr]
    assert (nic.model, str(nic.mac), nic.alias, str(nic.target_dev)) == (  # type: ignore[union-attr]
        "virtio",
        "52:54:00:00:00:02",
        "ua-a",
        "tap7",
    )


def test_values_are_quoted() -> None:
    nic = parse_device(interface_xml("network", "a'b\"c"))
    assert nic.source.network == "a'b\"c"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("type_", "source", "message"),
    [
        ("bridge", None, "an interface of type bridge needs a source"),
        ("network", None, "an interface of type network needs a source"),
        ("user", "br0", "an interface of type user takes no source"),
    ],
)
def test_a_missing_or_extra_source_is_an_error(
    type_: str, source: str | None, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        interface_xml(type_, source)
