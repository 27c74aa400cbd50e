"""Golden round trips: every document in data/roundtrip/ is parsed and formatted, and the
output must equal the reviewed ``*.out.xml`` next to it, format again to itself, and parse
back to an equal model. ``QCTL_REGEN_GOLDEN=1`` rewrites the ``*.out.xml`` files instead
(review the diff).

Documents whose name contains ``live`` are read as live XML (qctl- and libvirt-assigned
aliases allowed).
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import pytest

from qctl.conf import (
    AnyDef,
    DomainDef,
    NetworkDef,
    check,
    format_xml,
    load,
    parse_device,
    parse_domain,
    parse_network,
)

DATA = Path(__file__).parent / "data" / "roundtrip"
EXAMPLES = Path(__file__).parents[2] / "examples"
INPUTS = sorted(p for p in DATA.glob("*.xml") if not p.name.endswith(".out.xml"))
REGEN = os.environ.get("QCTL_REGEN_GOLDEN") == "1"


def _reparse(text: str, like: AnyDef, *, live: bool) -> AnyDef:
    """Parse ``text`` with the entry point for documents of ``like``'s kind."""
    if isinstance(like, DomainDef):
        return parse_domain(text, live=live, lenient=True)
    if isinstance(like, NetworkDef):
        return parse_network(text, lenient=True)
    return parse_device(text, live=live, lenient=True)


def _inventory(text: str) -> Counter[tuple[str, str]]:
    """Every element tag and every (tag, attribute name) of a document, counted."""
    found: Counter[tuple[str, str]] = Counter()
    for element in ET.fromstring(text).iter():
        found[(element.tag, "")] += 1
        for name in element.attrib:
            found[(element.tag, name)] += 1
    return found


def test_there_are_inputs() -> None:
    assert len(INPUTS) >= 15


@pytest.mark.parametrize("path", INPUTS, ids=lambda p: p.stem)
def test_golden_round_trip(path: Path) -> None:
    live = "live" in path.name
    defn = load(path, live=live, lenient=True)  # parts qctl does not apply pass through
    out = format_xml(defn)
    golden = path.with_name(path.stem + ".out.xml")
    if REGEN:
        golden.write_text(out)
    assert out == golden.read_text(), f"{path.name}: output differs from {golden.name}"
    # A second pass changes nothing, and the model survives its own output.
    again = _reparse(out, defn, live=live)
    assert again == defn
    assert format_xml(again) == out


@pytest.mark.parametrize("path", INPUTS, ids=lambda p: p.stem)
def test_round_trip_loses_nothing(path: Path) -> None:
    """Every element and attribute of the input is still in the output (values may be
    normalized, and a few attributes are added, like the PCI source's type='pci')."""
    out = format_xml(load(path, live="live" in path.name, lenient=True))
    missing = _inventory(path.read_text()) - _inventory(out)
    assert not missing


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.xml")), ids=lambda p: p.stem)
def test_examples_are_valid_and_stable(path: Path) -> None:
    assert check(path.read_bytes(), source=str(path)) == []
    out = format_xml(load(path))
    assert format_xml(_reparse(out, load(path), live=False)) == out


def test_examples_cover_the_documented_set() -> None:
    names = {p.name for p in EXAMPLES.glob("*.xml")}
    assert names >= {
        "domain-basic.xml",
        "domain-failover.xml",
        "interface-hostdev-pci.xml",
        "interface-hostdev-usb-busdev.xml",
        "interface-hostdev-usb-vendor.xml",
        "network-bridge.xml",
        "network-hostdev-pf.xml",
        "network-hostdev-vfs.xml",
    }
