"""Property tests: whatever a document looks like, reading it gives a model or a
ConfigError, nothing else; what formats, reads back the same; and an accepted domain's
command line gives the guest every interface and host device it defines, or the start is
refused — nothing the document asks for is silently dropped."""

from __future__ import annotations

import copy
import itertools
import json
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qctl.caps import QEMUCaps
from qctl.conf import (
    AnyDef,
    DomainDef,
    HostdevDef,
    InterfaceDef,
    InterfaceDriverDef,
    InterfaceSourceDef,
    InterfaceType,
    LinkState,
    NetDriverName,
    TeamingDef,
    TeamingType,
    USBAddress,
    check,
    format_xml,
    parse_device,
    parse_domain,
    parse_network,
    validate_device,
)
from qctl.errors import ConfigError, QctlError
from qctl.qemu.dryrun import dry_run
from qctl.types import IfName, MACAddress, PCIAddress

HERE = Path(__file__).parent
CAPS = QEMUCaps.from_json(
    (HERE.parent / "qemu" / "data" / "argv" / "qemu-7.2.caps.json").read_text()
)
SEEDS = [
    (path.read_bytes(), "live" in path.name)
    for path in sorted((HERE / "data" / "roundtrip").glob("*.xml"))
    + sorted((HERE.parents[1] / "examples").glob("*.xml"))
    if not path.name.endswith(".out.xml")
]
ATTRIBUTE_NAMES = [
    "type", "index", "model", "address", "domain", "bus", "slot", "function", "device",
    "queues", "rx_queue_size", "tx_queue_size", "name", "persistent", "managed", "state",
    "size", "order", "dev", "bridge", "network", "unit", "current", "mode", "id", "path",
    "arch", "machine", "xmlns:x",
]  # fmt: skip
VALUES = [
    "", "0", "1", "-1", "0x", "0x20", "0x10000", "256", "300", "1024", "99999999999999999999",
    "yes", "no", "maybe", "virtio", "e1000e", "vhost", "vfio", "qemu", "hostdev", "network",
    "bridge", "user", "ethernet", "pci", "usb", "pcie-root", "pci-bridge", "transient",
    "persistent", "ua-x", "ua-backup0", "net0", "VIRTIO", "usb-net", "unassigned",
    "01:00:5e:00:00:01", "00:00:00:00:00:00",
    "52:54:00:00:00:01", "br0", "a-very-long-interface-name", "MiB", "pages", "down", "&amp;",
]  # fmt: skip
TAGS = [
    "interface", "hostdev", "controller", "serial", "mac", "source", "address", "alias",
    "teaming", "driver", "model", "target", "boot", "link", "mtu", "vendor", "product",
    "forward", "pf", "bridge", "name", "memory", "vcpu", "os", "devices", "uuid", "kernel",
    "vlan", "tag", "bandwidth", "virtualport", "rom",
]  # fmt: skip

_Mutation = Callable[[ET.Element, st.DrawFn], None]


def _pick(root: ET.Element, draw: st.DrawFn) -> tuple[ET.Element, ET.Element] | None:
    """A random non-root element and its parent."""
    pairs = [(parent, child) for parent in root.iter() for child in parent]
    return draw(st.sampled_from(pairs)) if pairs else None


def _delete(root: ET.Element, draw: st.DrawFn) -> None:
    if (pair := _pick(root, draw)) is not None:
        pair[0].remove(pair[1])


def _duplicate(root: ET.Element, draw: st.DrawFn) -> None:
    if (pair := _pick(root, draw)) is not None:
        parent, child = pair
        parent.insert(list(parent).index(child) + 1, copy.deepcopy(child))


def _reorder(root: ET.Element, draw: st.DrawFn) -> None:
    if (pair := _pick(root, draw)) is not None:
        parent, child = pair
        parent.remove(child)
        parent.insert(draw(st.integers(0, len(parent))), child)


def _move(root: ET.Element, draw: st.DrawFn) -> None:
    if (pair := _pick(root, draw)) is not None:
        pair[0].remove(pair[1])
        draw(st.sampled_from(list(root.iter()))).append(pair[1])


def _set_attribute(root: ET.Element, draw: st.DrawFn) -> None:
    element = draw(st.sampled_from(list(root.iter())))
    name = draw(st.sampled_from(ATTRIBUTE_NAMES) | st.from_regex(r"[a-z]{1,6}", fullmatch=True))
    element.set(name, draw(st.sampled_from(VALUES) | st.text(max_size=6)))


def _drop_attribute(root: ET.Element, draw: st.DrawFn) -> None:
    element = draw(st.sampled_from(list(root.iter())))
    if element.attrib:
        del element.attrib[draw(st.sampled_from(sorted(element.attrib)))]


def _set_text(root: ET.Element, draw: st.DrawFn) -> None:
    draw(st.sampled_from(list(root.iter()))).text = draw(st.sampled_from(VALUES) | st.text())


def _rename(root: ET.Element, draw: st.DrawFn) -> None:
    if (pair := _pick(root, draw)) is not None:
        pair[1].tag = draw(st.sampled_from(TAGS))


TREE_MUTATIONS: list[_Mutation] = [
    _delete, _duplicate, _reorder, _move, _set_attribute, _drop_attribute, _set_text, _rename,
]  # fmt: skip


@st.composite
def documents(draw: st.DrawFn) -> tuple[bytes, bytes, bool]:
    """(mutated document, the seed it came from, whether the seed is live XML)."""
    seed, live = draw(st.sampled_from(SEEDS))
    data = seed
    for _ in range(draw(st.integers(1, 4))):
        if draw(st.integers(0, 3)):  # mostly keep the document well-formed
            try:
                root = ET.fromstring(data)
            except ET.ParseError:
                continue
            draw(st.sampled_from(TREE_MUTATIONS))(root, draw)
            data = ET.tostring(root)
        else:
            at = draw(st.integers(0, len(data)))
            kind = draw(st.sampled_from(["truncate", "insert", "replace"]))
            if kind == "truncate":
                data = data[:at]
            elif kind == "insert":
                data = data[:at] + draw(st.binary(min_size=1, max_size=8)) + data[at:]
            else:
                data = data[:at] + draw(st.binary(min_size=1, max_size=1)) + data[at + 1 :]
    return data, seed, live


def _parser_for(seed: bytes, live: bool) -> Callable[[bytes | str], AnyDef]:
    """The entry point for documents of the seed's kind."""
    root = ET.fromstring(seed).tag
    if root == "domain":
        return lambda data: parse_domain(data, live=live)
    if root == "network":
        return parse_network
    return lambda data: parse_device(data, live=live)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents())
def test_mutated_documents_give_a_model_or_a_config_error(
    case: tuple[bytes, bytes, bool],
) -> None:
    data, seed, live = case
    problems = check(data, source="fuzz.xml", live=live)
    assert all(isinstance(problem, ConfigError) for problem in problems)
    assert all(str(problem).startswith("fuzz.xml") for problem in problems)
    parse = _parser_for(seed, live)
    try:
        defn = parse(data)
    except ConfigError as exc:
        assert problems or "document, not <" in exc.message
        return
    assert problems == []
    # Formatting is stable: a second pass changes nothing. (The model of the first output
    # may list unknown elements in another order than the mutated input did.)
    out = format_xml(defn)
    assert format_xml(parse(out)) == out
    if isinstance(defn, DomainDef) and not live:
        _assert_argv_has_every_device(defn)


def _device_ids(argv: list[str]) -> list[str]:
    """The ``id`` of every ``-device`` of a command line (JSON or key=value syntax)."""
    ids = []
    for option, value in itertools.pairwise(argv):
        if option != "-device":
            continue
        if value.startswith("{"):
            ids.append(str(json.loads(value)["id"]))
        else:
            ids += [part[3:] for part in value.split(",") if part.startswith("id=")]
    return ids


def _assert_argv_has_every_device(defn: DomainDef) -> None:
    """The domain starts with every interface and host device, or is refused."""
    try:
        result = dry_run(defn, CAPS, vhost_net_available=True)
    except QctlError:
        return  # refused, with a message: nothing silently dropped
    live = result.domain
    assert len(live.interfaces) == len(defn.interfaces)
    assert len(live.hostdevs) == len(defn.hostdevs)
    ids = _device_ids(result.argv)
    for device in (*live.interfaces, *live.hostdevs):
        if isinstance(device, HostdevDef) and device.unassigned:
            assert device.alias not in ids  # held on the host, never given to the guest
        else:
            assert device.alias in ids, f"{device.alias} is missing from {result.argv}"


# -- interfaces built in code -------------------------------------------------------------

macs = st.binary(min_size=6, max_size=6).map(
    lambda b: MACAddress(bytes([b[0] & 0xFE | 0x02]) + b[1:])
)
pci = st.builds(
    PCIAddress,
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFF),
    st.integers(0, 0x1F),
    st.integers(0, 7),
)
aliases = st.from_regex(r"ua-[A-Za-z0-9_-]{1,12}", fullmatch=True)
ifnames = st.from_regex(r"[a-z][a-z0-9]{0,14}", fullmatch=True).map(IfName)


@st.composite
def interfaces(draw: st.DrawFn) -> InterfaceDef:
    """Valid interfaces of every type with the optional parts they may have."""
    kind = draw(st.sampled_from(InterfaceType))
    common = {
        "mac": draw(st.none() | macs),
        "alias": draw(st.none() | aliases),
        "address": draw(st.none() | pci),
        "boot_order": draw(st.none() | st.integers(1, 100)),
    }
    if kind is InterfaceType.HOSTDEV:
        usb = draw(st.booleans())
        source = InterfaceSourceDef(
            pci=None if usb else draw(pci),
            usb=draw(st.none() | st.builds(USBAddress, st.integers(0, 255), st.integers(1, 127)))
            if usb
            else None,
            vendor=0x0B95 if usb else None,
            product=0x1790 if usb else None,
        )
        return InterfaceDef(
            type=kind,
            source=source,
            managed=draw(st.none() | st.booleans()),
            driver=draw(st.none() | st.just(InterfaceDriverDef(name=NetDriverName.VFIO))),
            **common,  # type: ignore[arg-type]
        )
    model = draw(st.sampled_from(["virtio", "virtio-transitional", "e1000e", "rtl8139"]))
    virtio = model.startswith("virtio")
    common["link_state"] = draw(st.none() | st.sampled_from(LinkState))
    common["mtu"] = draw(st.none() | st.integers(68, 65535))
    source = None
    if kind is InterfaceType.BRIDGE:
        source = InterfaceSourceDef(bridge=draw(ifnames))
    elif kind is InterfaceType.NETWORK:
        source = InterfaceSourceDef(network=draw(st.from_regex(r"[a-z]{1,10}", fullmatch=True)))
    driver = InterfaceDriverDef(
        name=draw(
            st.sampled_from(
                [None, NetDriverName.QEMU] + [NetDriverName.VHOST] * (model.startswith("virtio"))
            )
        ),
        # queues over 1 and queue sizes are virtio's only
        queues=draw(st.none() | st.integers(1, 256 if virtio else 1)),
        rx_queue_size=draw(st.none() | st.sampled_from([256, 512, 1024])) if virtio else None,
        tx_queue_size=draw(st.none() | st.sampled_from([256, 512, 1024])) if virtio else None,
    )
    teaming = None
    if virtio and draw(st.booleans()):
        teaming = TeamingDef(type=TeamingType.PERSISTENT)
    return InterfaceDef(
        type=kind,
        source=source,
        model=model,
        driver=draw(st.none() | st.just(driver)),
        teaming=teaming,
        target_dev=draw(st.none() | ifnames) if kind is not InterfaceType.USER else None,
        target_managed=draw(st.none() | st.just(True)),  # managed='no' is refused
        **common,  # type: ignore[arg-type]
    )


@settings(max_examples=300, deadline=None)
@given(interfaces())
def test_interfaces_built_in_code_survive_a_round_trip(iface: InterfaceDef) -> None:
    assert validate_device(iface) == []
    text = format_xml(iface)
    again = parse_device(text)
    assert again == iface
    assert format_xml(again) == text
