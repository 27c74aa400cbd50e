"""The model's own value rules: memory units, aliases, equality without lines."""

from __future__ import annotations

from dataclasses import replace

import pytest

from qctl.conf import (
    ControllerModel,
    DevicesDef,
    DomainDef,
    DomainType,
    HostdevDef,
    InterfaceDef,
    InterfaceType,
    MemoryDef,
    OSDef,
    RawXML,
    USBAddress,
)
from qctl.conf.model import device_tag, is_device_id, is_user_alias
from qctl.types import PCIAddress


@pytest.mark.parametrize(
    ("value", "unit", "kib"),
    [
        (1024, None, 1024),
        (2048, "b", 2),
        (2049, "bytes", 3),  # rounded up to whole KiB
        (1000, "KB", 977),
        (3, "k", 3),
        (3, "KiB", 3),
        (1, "MB", 977),
        (2, "M", 2048),
        (2, "MiB", 2048),
        (1, "GB", 976563),
        (1, "G", 1024**2),
        (1, "GiB", 1024**2),
        (1, "TB", 976562500),
        (1, "T", 1024**3),
        (1, "TiB", 1024**3),
        (2, "mib", 2048),  # units are not case-sensitive, as in libvirt
    ],
)
def test_memory_in_kib(value: int, unit: str | None, kib: int) -> None:
    assert MemoryDef(value, unit).kib == kib


def test_memory_refuses_unknown_units_and_negative_amounts() -> None:
    with pytest.raises(ValueError, match="unknown memory unit 'pages'"):
        MemoryDef(1, "pages")
    with pytest.raises(ValueError, match="negative"):
        MemoryDef(-1)


@pytest.mark.parametrize("alias", ["ua-net0", "ua-A_b-9", "ua--"])
def test_user_aliases(alias: str) -> None:
    assert is_user_alias(alias)


@pytest.mark.parametrize("alias", ["net0", "ua-", "ua-a.b", "ua-a b", "ua-ü", "UA-x", " ua-x"])
def test_not_user_aliases(alias: str) -> None:
    assert not is_user_alias(alias)


@pytest.mark.parametrize(("alias", "ok"), [("net0", True), ("pci.1", True), ("0net", False)])
def test_device_ids(alias: str, ok: bool) -> None:
    assert is_device_id(alias) is ok


def test_lines_do_not_take_part_in_equality() -> None:
    a = InterfaceDef(type=InterfaceType.USER, line=3, child_lines=(("mac", 4),))
    b = InterfaceDef(type=InterfaceType.USER)
    assert a == b and hash(a) == hash(b)
    assert a.line_of("mac") == 4
    assert a.line_of("alias") == 3
    assert b.line_of("mac") is None


def test_virtio_models() -> None:
    for model, virtio in [("virtio", True), ("virtio-non-transitional", True), ("e1000e", False)]:
        assert InterfaceDef(type=InterfaceType.USER, model=model).is_virtio is virtio
    assert not InterfaceDef(type=InterfaceType.USER).is_virtio


def test_root_controller_models() -> None:
    assert {m for m in ControllerModel if m.is_root} == {
        ControllerModel.PCI_ROOT,
        ControllerModel.PCIE_ROOT,
    }


def test_usb_address() -> None:
    assert str(USBAddress(1, 3)) == "001:003"
    with pytest.raises(ValueError):
        USBAddress(-1, 3)


def test_domain_device_views_keep_document_order() -> None:
    nic1 = InterfaceDef(type=InterfaceType.USER, alias="ua-1")
    nic2 = replace(nic1, alias="ua-2")
    hostdev = HostdevDef(source=PCIAddress(0, 1, 0, 0))
    raw = RawXML(xml="<disk/>", tag="disk")
    domain = DomainDef(
        type=DomainType.QEMU,
        name="d",
        memory=MemoryDef(1),
        os=OSDef(),
        devices=DevicesDef(items=(nic1, raw, hostdev, nic2)),
    )
    assert domain.interfaces == (nic1, nic2)
    assert domain.hostdevs == (hostdev,)
    assert domain.controllers == () and domain.serials == ()
    assert [device_tag(item) for item in domain.devices.items] == [
        "interface",
        "disk",
        "hostdev",
        "interface",
    ]
