"""Definitions as JSON-ready data, for ``qctl format --json`` and for callers that log or
compare configurations.

Dataclasses become dicts of their compared fields (where a definition came from — lines —
is left out), enums their value, addresses and names their text, tuples lists. Devices and
whole documents get a ``kind`` key (``"interface"``, ``"raw"``, …) so a list of mixed devices
can be told apart.
"""

from __future__ import annotations

import dataclasses
from enum import Enum
from typing import TypeAlias
from uuid import UUID

from qctl.conf.model import (
    ControllerDef,
    DiskControllerDef,
    DiskDef,
    DomainDef,
    HostdevDef,
    InterfaceDef,
    NetworkDef,
    RawXML,
    SerialDef,
)
from qctl.types import IfName, MACAddress, PCIAddress

__all__ = ["JSONValue", "def_to_dict"]

JSONValue: TypeAlias = "bool | int | str | list[JSONValue] | dict[str, JSONValue] | None"

_KINDS: dict[type, str] = {
    DomainDef: "domain",
    NetworkDef: "network",
    InterfaceDef: "interface",
    HostdevDef: "hostdev",
    ControllerDef: "controller",
    DiskControllerDef: "controller",
    DiskDef: "disk",
    SerialDef: "serial",
    RawXML: "raw",
}


def _convert(value: object) -> JSONValue:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, Enum):
        return _convert(value.value)
    if isinstance(value, MACAddress | PCIAddress | IfName | UUID):
        return str(value)
    if isinstance(value, tuple | list):
        return [_convert(item) for item in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return def_to_dict(value)
    raise TypeError(f"cannot convert {type(value).__name__} to JSON")


def def_to_dict(defn: object) -> dict[str, JSONValue]:
    """``defn`` (any definition from :mod:`qctl.conf.model`) as JSON-ready data."""
    if not dataclasses.is_dataclass(defn) or isinstance(defn, type):
        raise TypeError(f"{type(defn).__name__} is not a definition")
    data: dict[str, JSONValue] = {}
    # a subclass (a live device) is of its definition's kind
    kind = next((_KINDS[cls] for cls in type(defn).__mro__ if cls in _KINDS), None)
    if kind is not None:
        data["kind"] = kind
    for spec in dataclasses.fields(defn):
        if spec.compare:
            data[spec.name] = _convert(getattr(defn, spec.name))
    return data
