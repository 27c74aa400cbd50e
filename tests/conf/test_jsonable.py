"""Definitions as JSON-ready data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qctl.conf import DomainDef, def_to_dict, load

EXAMPLES = Path(__file__).parents[2] / "examples"


def test_domain_as_data() -> None:
    domain = load(EXAMPLES / "domain-failover.xml")
    assert isinstance(domain, DomainDef)
    data = def_to_dict(domain)
    assert json.loads(json.dumps(data)) == data
    assert data["kind"] == "domain"
    assert data["type"] == "kvm"
    assert data["memory"] == {"value": 1, "unit": "GiB"}
    assert "line" not in data and "child_lines" not in data
    devices = data["devices"]
    assert isinstance(devices, dict)
    items = devices["items"]
    assert isinstance(items, list)
    assert [item["kind"] for item in items if isinstance(item, dict)] == [
        "controller",
        "controller",
        "controller",
        "serial",
        "interface",
        "interface",
    ]
    vf = items[-1]
    assert isinstance(vf, dict)
    assert vf["mac"] == "52:54:00:aa:bb:01"
    assert vf["teaming"] == {"type": "transient", "persistent": "ua-backup0"}
    source = vf["source"]
    assert isinstance(source, dict) and source["pci"] == "0000:3b:02.1"


def test_only_definitions_convert() -> None:
    with pytest.raises(TypeError):
        def_to_dict("not a definition")
