"""Capability flags, and how each is detected — as data.

:class:`Capability` names what a QEMU binary can do that changes qctl's choices.
:data:`DETECTION` maps every flag to exactly one rule, a small value saying where the answer
is found: a QMP command or event, a QOM type, a device property, a path in the QAPI schema
(see :mod:`qctl.caps.schema` for the path syntax), or KVM's state. Adding a flag is adding a
member and a row; :func:`detect` needs no change.

:data:`PROBED_DEVICES` lists the device types whose properties the probe fetches: the NICs
and passthrough devices qctl emits. Every :class:`DeviceProperty` rule must name one of them.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType
from typing import Literal, Protocol

from qctl.record import record

__all__ = [
    "DETECTION",
    "KVM",
    "PROBED_DEVICES",
    "SCHEMA_PATHS",
    "Capability",
    "Command",
    "CommandLineOption",
    "DeviceProperty",
    "Event",
    "Facts",
    "QOMType",
    "Rule",
    "SchemaPath",
    "detect",
]


class Capability(enum.StrEnum):
    """Something a QEMU binary can do. The value is the flag's name in JSON and on the CLI."""

    VIRTIO_NET_FAILOVER = "virtio_net_failover"
    FAILOVER_PAIR_ID = "failover_pair_id"
    NETDEV_JSON = "netdev_json"
    DEVICE_JSON = "device_json"
    VFIO_PCI = "vfio_pci"
    PCIE_ROOT_PORT = "pcie_root_port"
    XEN_PV_NIC = "xen_pv_nic"
    DEVICE_DELETED_EVENT = "device_deleted_event"
    DEVICE_UNPLUG_GUEST_ERROR_EVENT = "device_unplug_guest_error_event"
    FAILOVER_NEGOTIATED_EVENT = "failover_negotiated_event"
    UNPLUG_PRIMARY_EVENT = "unplug_primary_event"
    MIGRATION_WAIT_UNPLUG = "migration_wait_unplug"
    MIGRATION_BLOCKED_REASONS = "migration_blocked_reasons"
    ADD_FD = "add_fd"
    KVM_PRESENT = "kvm_present"
    KVM_ENABLED = "kvm_enabled"
    SECCOMP_SANDBOX = "seccomp_sandbox"
    RUN_WITH_USER = "run_with_user"


class Facts(Protocol):
    """What a rule reads: the probed facts of a QEMU (:class:`~qctl.caps.model.QEMUCaps`
    has them). A protocol, so the rules need not import the model that applies them."""

    @property
    def commands(self) -> frozenset[str]: ...
    @property
    def events(self) -> frozenset[str]: ...
    @property
    def qom_types(self) -> frozenset[str]: ...
    @property
    def device_properties(self) -> Mapping[str, Mapping[str, str]]: ...
    @property
    def schema_paths(self) -> frozenset[str]: ...
    @property
    def kvm_present(self) -> bool: ...
    @property
    def kvm_enabled(self) -> bool: ...
    @property
    def command_line_options(self) -> frozenset[str]: ...


@record
class Command:
    """The QMP command ``name`` exists."""

    name: str

    def holds(self, caps: Facts) -> bool:
        """Whether ``caps`` satisfies this rule."""
        return self.name in caps.commands


@record
class Event:
    """QEMU can emit the QMP event ``name``."""

    name: str

    def holds(self, caps: Facts) -> bool:
        """Whether ``caps`` satisfies this rule."""
        return self.name in caps.events


@record
class QOMType:
    """The QOM type (device, object) ``name`` is compiled in."""

    name: str

    def holds(self, caps: Facts) -> bool:
        """Whether ``caps`` satisfies this rule."""
        return self.name in caps.qom_types


@record
class DeviceProperty:
    """Device type ``device`` has the property ``name``."""

    device: str
    name: str

    def holds(self, caps: Facts) -> bool:
        """Whether ``caps`` satisfies this rule."""
        return self.name in caps.device_properties.get(self.device, {})


@record
class SchemaPath:
    """The QAPI schema path ``path`` resolves (see :mod:`qctl.caps.schema`)."""

    path: str

    def holds(self, caps: Facts) -> bool:
        """Whether ``caps`` satisfies this rule."""
        return self.path in caps.schema_paths


@record
class KVM:
    """KVM is ``present`` (the host has it) or ``enabled`` (QEMU uses it), per ``query-kvm``."""

    state: Literal["present", "enabled"]

    def holds(self, caps: Facts) -> bool:
        """Whether ``caps`` satisfies this rule."""
        return caps.kvm_enabled if self.state == "enabled" else caps.kvm_present


@record
class CommandLineOption:
    """``query-command-line-options`` lists option group ``option`` (with ``parameter``).

    Options that exist only when compiled in (``-sandbox`` needs libseccomp) or that are new
    (``-run-with user=``) are found here; QAPI does not describe the command line.
    """

    option: str
    parameter: str | None = None

    def holds(self, caps: Facts) -> bool:
        """Whether ``caps`` satisfies this rule."""
        key = self.option if self.parameter is None else f"{self.option}.{self.parameter}"
        return key in caps.command_line_options


Rule = Command | Event | QOMType | DeviceProperty | SchemaPath | KVM | CommandLineOption

C = Capability
DETECTION: Mapping[Capability, Rule] = MappingProxyType(
    {
        # virtio-net standby side of failover (QEMU 4.2)
        C.VIRTIO_NET_FAILOVER: DeviceProperty("virtio-net-pci", "failover"),
        # primary side: any PCI device; qctl pairs VFIO functions
        C.FAILOVER_PAIR_ID: DeviceProperty("vfio-pci", "failover_pair_id"),
        # netdev_add takes the QAPI Netdev union, so -netdev accepts JSON (QEMU 6.0)
        C.NETDEV_JSON: SchemaPath("netdev_add/arg-type/+tap"),
        # -device takes JSON, and a JSON -device behaves as device_add does
        C.DEVICE_JSON: SchemaPath("device_add/$json-cli-hotplug"),
        C.VFIO_PCI: QOMType("vfio-pci"),
        C.PCIE_ROOT_PORT: QOMType("pcie-root-port"),
        C.XEN_PV_NIC: QOMType("xen-net-device"),
        C.DEVICE_DELETED_EVENT: Event("DEVICE_DELETED"),
        C.DEVICE_UNPLUG_GUEST_ERROR_EVENT: Event("DEVICE_UNPLUG_GUEST_ERROR"),
        C.FAILOVER_NEGOTIATED_EVENT: Event("FAILOVER_NEGOTIATED"),
        C.UNPLUG_PRIMARY_EVENT: Event("UNPLUG_PRIMARY"),
        # MigrationStatus has wait-unplug: migration waits for the primary to go (QEMU 4.2)
        C.MIGRATION_WAIT_UNPLUG: SchemaPath("query-migrate/ret-type/status/=wait-unplug"),
        C.MIGRATION_BLOCKED_REASONS: SchemaPath("query-migrate/ret-type/blocked-reasons"),
        C.ADD_FD: Command("add-fd"),
        C.KVM_PRESENT: KVM("present"),
        C.KVM_ENABLED: KVM("enabled"),
        # -sandbox: QEMU built with libseccomp
        C.SECCOMP_SANDBOX: CommandLineOption("sandbox"),
        # -run-with user= (QEMU 9.1, which deprecates -runas)
        C.RUN_WITH_USER: CommandLineOption("run-with", "user"),
    }
)
del C

# The schema paths the probe resolves; the caps keep the ones that hold.
SCHEMA_PATHS: frozenset[str] = frozenset(
    rule.path for rule in DETECTION.values() if isinstance(rule, SchemaPath)
)

# Device types whose properties the probe fetches, when the binary has them.
PROBED_DEVICES: tuple[str, ...] = (
    "virtio-net-pci",
    "e1000",
    "e1000e",
    "rtl8139",
    "vfio-pci",
    "pcie-root-port",
    "xen-net-device",
)


def detect(caps: Facts) -> frozenset[Capability]:
    """The flags whose rule holds for ``caps``."""
    return frozenset(flag for flag, rule in DETECTION.items() if rule.holds(caps))
