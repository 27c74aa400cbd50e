"""Devices as a running domain shows them: the same definitions, the alias always set.

A definition's ``alias`` is optional (a document may leave naming to qctl); once QEMU holds
the device it has one, and the live types say so, so callers need no ``alias or ""``.
"""

from __future__ import annotations

from dataclasses import fields
from typing import overload

from qctl.conf.model import HostdevDef, InterfaceDef
from qctl.record import record


@record(kw_only=True)
class LiveInterface(InterfaceDef):
    """An ``<interface>`` of a running domain."""

    alias: str


@record(kw_only=True)
class LiveHostdev(HostdevDef):
    """A ``<hostdev>`` of a running domain."""

    alias: str


@overload
def as_live(device: InterfaceDef) -> LiveInterface: ...
@overload
def as_live(device: HostdevDef) -> LiveHostdev: ...
def as_live(device: InterfaceDef | HostdevDef) -> LiveInterface | LiveHostdev:
    """``device`` as its live type; a device QEMU holds without an alias is a bug here."""
    if device.alias is None:
        raise ValueError(f"a live {type(device).__name__} without an alias")
    values = {f.name: getattr(device, f.name) for f in fields(device) if f.init}
    if isinstance(device, InterfaceDef):
        return LiveInterface(**values)
    return LiveHostdev(**values)
