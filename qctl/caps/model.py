"""What one QEMU binary can do: the frozen :class:`QEMUCaps` and its JSON form.

The caps keep QEMU's answers in compact form: names of commands, events and QOM types; the
properties (name → type) of the devices in :data:`~qctl.caps.flags.PROBED_DEVICES`; machine
types; KVM's state; and, of the ~200 KB ``query-qmp-schema`` reply, only the schema paths of
the detection table that resolve (:data:`~qctl.caps.flags.SCHEMA_PATHS`). That keeps a cached
lookup cheap; a new schema question needs a new probe, which a new qctl version forces anyway
(the version is part of the cache fingerprint).

``flags`` is not stored but derived from the facts by the detection table, so it can never
disagree with them. :meth:`QEMUCaps.to_json` writes it for readers; :meth:`QEMUCaps.from_json`
derives it again, so a round trip is lossless.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from qctl.caps.flags import Capability, detect
from qctl.record import record

__all__ = ["HostFacts", "MachineType", "QEMUCaps"]


@record
class MachineType:
    """A machine type (``pc-q35-7.2``), its short alias (``q35``), whether it is the default."""

    name: str
    alias: str | None = None
    is_default: bool = False


@record
class HostFacts:
    """Host facts that decide choices but are not QEMU's: which device nodes qctl can open.

    ``vhost_net``: ``/dev/vhost-net`` opens read-write (in-kernel virtio-net datapath);
    ``tun``: ``/dev/net/tun`` does (tap devices).
    """

    vhost_net: bool = False
    tun: bool = False


@dataclass(frozen=True)
class QEMUCaps:
    """The capabilities of one QEMU binary (or of a running QEMU, ``binary`` ``None``).

    ``version`` is ``(major, minor, micro)``; ``device_properties`` maps a device type to its
    properties and their QAPI types. Collections given as plain sets, lists or dicts are
    frozen on construction. See the module for what is kept of the schema.
    """

    binary: str | None = None
    version: tuple[int, int, int] = (0, 0, 0)
    package: str = ""
    # The long lists stay out of repr(): flags say what they mean.
    commands: frozenset[str] = field(default=frozenset(), repr=False)
    events: frozenset[str] = field(default=frozenset(), repr=False)
    qom_types: frozenset[str] = field(default=frozenset(), repr=False)
    device_properties: Mapping[str, Mapping[str, str]] = field(default_factory=dict, repr=False)
    machines: tuple[MachineType, ...] = field(default=(), repr=False)
    kvm_present: bool = False
    kvm_enabled: bool = False
    schema_paths: frozenset[str] = field(default=frozenset(), repr=False)
    #: ``query-command-line-options``: each option group, and ``group.parameter`` for its
    #: parameters (``sandbox``, ``run-with.user``); empty where QEMU lacks the command
    command_line_options: frozenset[str] = field(default=frozenset(), repr=False)
    host: HostFacts = HostFacts()
    flags: frozenset[Capability] = field(init=False)

    def __post_init__(self) -> None:
        freeze = object.__setattr__
        for name in ("commands", "events", "qom_types", "schema_paths", "command_line_options"):
            freeze(self, name, frozenset(getattr(self, name)))
        freeze(self, "version", tuple(self.version))
        freeze(self, "machines", tuple(self.machines))
        freeze(
            self,
            "device_properties",
            MappingProxyType(
                {
                    device: MappingProxyType(dict(sorted(props.items())))
                    for device, props in sorted(self.device_properties.items())
                }
            ),
        )
        freeze(self, "flags", detect(self))

    def __hash__(self) -> int:
        # Equal caps have equal identities and flags; the mappings themselves are unhashable.
        return hash((self.binary, self.version, self.package, self.flags))

    def has(self, flag: Capability) -> bool:
        """Whether this QEMU has ``flag``."""
        return flag in self.flags

    @property
    def version_text(self) -> str:
        """The version as QEMU prints it: ``7.2.22``."""
        return ".".join(map(str, self.version))

    @property
    def default_machine(self) -> MachineType | None:
        """The machine type QEMU uses when none is given, if it has one."""
        return next((m for m in self.machines if m.is_default), None)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; collections sorted, so equal caps give equal text."""
        return {
            "binary": self.binary,
            "version": list(self.version),
            "package": self.package,
            "kvm": {"present": self.kvm_present, "enabled": self.kvm_enabled},
            "host": {"vhost_net": self.host.vhost_net, "tun": self.host.tun},
            "flags": sorted(self.flags),
            "machines": [
                {"name": m.name, "alias": m.alias, "default": m.is_default} for m in self.machines
            ],
            "commands": sorted(self.commands),
            "events": sorted(self.events),
            "qom_types": sorted(self.qom_types),
            "device_properties": {d: dict(p) for d, p in self.device_properties.items()},
            "schema_paths": sorted(self.schema_paths),
            "command_line_options": sorted(self.command_line_options),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> QEMUCaps:
        """The caps :meth:`to_dict` described; ``ValueError`` on anything malformed."""
        try:
            version = data["version"]
            if not (
                isinstance(version, list)
                and len(version) == 3
                and all(type(v) is int for v in version)
            ):
                raise ValueError(f"version must be three integers, not {version!r}")
            binary = data["binary"]
            if binary is not None and not isinstance(binary, str):
                raise ValueError("binary must be a path or null")
            properties = data["device_properties"]
            if not isinstance(properties, dict):
                raise ValueError("device_properties must be an object")
            return cls(
                binary=binary,
                version=(version[0], version[1], version[2]),
                package=_text(data["package"], "package"),
                commands=_names(data["commands"], "commands"),
                events=_names(data["events"], "events"),
                qom_types=_names(data["qom_types"], "qom_types"),
                device_properties={
                    _text(device, "device"): _property_types(props, device)
                    for device, props in properties.items()
                },
                machines=tuple(_machine(m) for m in data["machines"]),
                kvm_present=_flag(data["kvm"]["present"], "kvm.present"),
                kvm_enabled=_flag(data["kvm"]["enabled"], "kvm.enabled"),
                schema_paths=_names(data["schema_paths"], "schema_paths"),
                command_line_options=_names(
                    data.get("command_line_options", []), "command_line_options"
                ),
                host=HostFacts(
                    vhost_net=_flag(data["host"]["vhost_net"], "host.vhost_net"),
                    tun=_flag(data["host"]["tun"], "host.tun"),
                ),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"malformed capabilities: {type(exc).__name__}: {exc}") from exc

    def to_json(self, *, indent: int | None = None) -> str:
        """The caps as JSON text (see :meth:`to_dict`)."""
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_json(cls, text: str | bytes) -> QEMUCaps:
        """The caps :meth:`to_json` wrote; ``ValueError`` on malformed text."""
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("capabilities JSON must be an object")
        return cls.from_dict(data)


def _text(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string, not {value!r}")
    return value


def _flag(value: object, what: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{what} must be true or false, not {value!r}")
    return value


def _names(value: object, what: str) -> frozenset[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{what} must be a list of strings")
    return frozenset(value)


def _property_types(value: object, device: str) -> dict[str, str]:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ValueError(f"properties of {device} must map names to type names")
    return value


def _machine(value: Mapping[str, Any]) -> MachineType:
    alias = value["alias"]
    if alias is not None and not isinstance(alias, str):
        raise ValueError(f"machine alias must be a string or null, not {alias!r}")
    return MachineType(
        name=_text(value["name"], "machine name"),
        alias=alias,
        is_default=_flag(value["default"], "machine default"),
    )
