"""qctl: control QEMU like libvirt's QEMU driver, without a daemon.

This module is the public API: every name a user (and qctl's own CLI) may rely on is in
``__all__``. It holds no logic.

Start-up cost is paid per use: the error tree and the value types (stdlib only) are imported
here, every other name on first access (:func:`__getattr__`), so ``import qctl`` and
``qctl --help`` load neither lxml, nor qemu.qmp, nor pyroute2. ``_LAZY`` says which module
each such name comes from; type checkers read the same names from the ``TYPE_CHECKING``
block.
"""

import importlib
import logging
from typing import TYPE_CHECKING, Any

from qctl.errors import (
    ConfigError,
    ConsoleError,
    HostError,
    HotplugError,
    JobAbortedError,
    MigrationError,
    NetlinkError,
    ProcessError,
    QctlError,
    QMPCommandError,
    QMPConnectionError,
    QMPError,
    QMPProtocolError,
    QMPTimeoutError,
    ResourceBusyError,
    StateError,
    SysfsError,
    UnsupportedError,
    ValidationError,
    XMLSyntaxError,
)
from qctl.types import IfName, MACAddress, PCIAddress

if TYPE_CHECKING:
    from qctl.caps import Capability, CapsCache, HostFacts, MachineType, QEMUCaps, probe, probe_many
    from qctl.conf import (
        MAX_DOCUMENT_BYTES,
        AnyDef,
        ControllerDef,
        ControllerModel,
        DeviceDef,
        DevicesDef,
        DiskBus,
        DiskControllerDef,
        DiskControllerType,
        DiskDef,
        DiskDevice,
        DiskFormat,
        DiskType,
        DomainDef,
        DomainType,
        DriveAddress,
        ForwardDef,
        ForwardMode,
        HostdevDef,
        InterfaceDef,
        InterfaceDriverDef,
        InterfaceSourceDef,
        InterfaceType,
        LinkState,
        LiveHostdev,
        LiveInterface,
        MemoryDef,
        NetDriverName,
        NetworkDef,
        OSDef,
        RawXML,
        SerialDef,
        SerialType,
        TeamingDef,
        TeamingType,
        USBAddress,
        VCPUDef,
        VLANDef,
        VLANTagDef,
        check,
        def_to_dict,
        format_xml,
        load,
        load_domain,
        load_network,
        missing_images,
        not_created,
        parse_device,
        parse_domain,
        parse_network,
        read_document,
        review,
        validate_device,
        validate_domain,
        validate_network,
    )
    from qctl.host import LinkStats, link_stats
    from qctl.qemu.console import Console, ConsoleReader
    from qctl.qemu.domain import DetachResult, Domain, HostPaths, abort_job
    from qctl.qemu.dryrun import command_line
    from qctl.qemu.events import (
        DeviceAdded,
        DeviceRemoved,
        DomainEvent,
        EventStream,
        NICRxFilterChanged,
        OtherEvent,
        Shutdown,
        UnplugRejected,
    )
    from qctl.qemu.inventory import DomainState, discard_damaged, list_domain_states
    from qctl.qemu.jobs import DomainInfo, list_domains
    from qctl.qemu.ledger import DeviceKind, EntryState, Ledger, LedgerEntry
    from qctl.qemu.migration import MigrationOutcome, MigrationProgress
    from qctl.qemu.network import Allocation, NetworkStore
    from qctl.qemu.opening import Opening
    from qctl.qemu.process import Launcher
    from qctl.qemu.rawmonitor import human_monitor_command, monitor_command, parse_monitor_command
    from qctl.qemu.runstate import RunState
    from qctl.qemu.state import StateRoot
    from qctl.qemu.txn import JobRecord
    from qctl.qmp import EventSubscription, QMPClient, QMPEvent, connect_qmp

from qctl.version import __version__

__all__ = [
    "QctlError",
    "ConfigError",
    "XMLSyntaxError",
    "ValidationError",
    "UnsupportedError",
    "QMPError",
    "QMPConnectionError",
    "QMPProtocolError",
    "QMPTimeoutError",
    "QMPCommandError",
    "HostError",
    "NetlinkError",
    "SysfsError",
    "ResourceBusyError",
    "ProcessError",
    "StateError",
    "HotplugError",
    "JobAbortedError",
    "ConsoleError",
    "MigrationError",
    "IfName",
    "MACAddress",
    "PCIAddress",
    "DomainDef",
    "OSDef",
    "MemoryDef",
    "VCPUDef",
    "DevicesDef",
    "DeviceDef",
    "ControllerDef",
    "SerialDef",
    "DiskDef",
    "DiskControllerDef",
    "DriveAddress",
    "InterfaceDef",
    "InterfaceSourceDef",
    "InterfaceDriverDef",
    "TeamingDef",
    "VLANDef",
    "VLANTagDef",
    "HostdevDef",
    "LiveInterface",
    "LiveHostdev",
    "NetworkDef",
    "ForwardDef",
    "USBAddress",
    "RawXML",
    "AnyDef",
    "DomainType",
    "ControllerModel",
    "SerialType",
    "DiskType",
    "DiskDevice",
    "DiskBus",
    "DiskFormat",
    "DiskControllerType",
    "InterfaceType",
    "NetDriverName",
    "TeamingType",
    "LinkState",
    "ForwardMode",
    "parse_domain",
    "parse_network",
    "parse_device",
    "load",
    "load_domain",
    "load_network",
    "read_document",
    "MAX_DOCUMENT_BYTES",
    "check",
    "review",
    "format_xml",
    "def_to_dict",
    "validate_domain",
    "validate_device",
    "validate_network",
    "not_created",
    "missing_images",
    "Domain",
    "DomainInfo",
    "DomainState",
    "command_line",
    "list_domain_states",
    "discard_damaged",
    "DetachResult",
    "RunState",
    "JobRecord",
    "abort_job",
    "list_domains",
    "Opening",
    "MigrationProgress",
    "MigrationOutcome",
    "Ledger",
    "LedgerEntry",
    "EntryState",
    "DeviceKind",
    "Console",
    "ConsoleReader",
    "Launcher",
    "StateRoot",
    "NetworkStore",
    "Allocation",
    "DomainEvent",
    "DeviceAdded",
    "DeviceRemoved",
    "UnplugRejected",
    "NICRxFilterChanged",
    "Shutdown",
    "OtherEvent",
    "EventStream",
    "HostPaths",
    "Capability",
    "QEMUCaps",
    "MachineType",
    "HostFacts",
    "CapsCache",
    "probe",
    "probe_many",
    "QMPClient",
    "QMPEvent",
    "EventSubscription",
    "connect_qmp",
    "monitor_command",
    "human_monitor_command",
    "parse_monitor_command",
    "LinkStats",
    "link_stats",
    "__version__",
]


# Where each lazily imported public name lives.
_LAZY: dict[str, tuple[str, ...]] = {
    "qctl.caps": (
        "Capability",
        "CapsCache",
        "HostFacts",
        "MachineType",
        "QEMUCaps",
        "probe",
        "probe_many",
    ),
    "qctl.conf": (
        "AnyDef",
        "ControllerDef",
        "ControllerModel",
        "DeviceDef",
        "DevicesDef",
        "DiskBus",
        "DiskControllerDef",
        "DiskControllerType",
        "DiskDef",
        "DiskDevice",
        "DiskFormat",
        "DiskType",
        "DomainDef",
        "DomainType",
        "DriveAddress",
        "ForwardDef",
        "ForwardMode",
        "HostdevDef",
        "InterfaceDef",
        "InterfaceDriverDef",
        "InterfaceSourceDef",
        "InterfaceType",
        "LinkState",
        "LiveHostdev",
        "LiveInterface",
        "MAX_DOCUMENT_BYTES",
        "MemoryDef",
        "NetDriverName",
        "NetworkDef",
        "OSDef",
        "RawXML",
        "SerialDef",
        "SerialType",
        "TeamingDef",
        "TeamingType",
        "USBAddress",
        "VCPUDef",
        "VLANDef",
        "VLANTagDef",
        "check",
        "def_to_dict",
        "format_xml",
        "load",
        "load_domain",
        "load_network",
        "missing_images",
        "not_created",
        "parse_device",
        "parse_domain",
        "parse_network",
        "read_document",
        "review",
        "validate_device",
        "validate_domain",
        "validate_network",
    ),
    "qctl.host": (
        "LinkStats",
        "link_stats",
    ),
    "qctl.qemu.console": (
        "Console",
        "ConsoleReader",
    ),
    "qctl.qemu.jobs": (
        "DomainInfo",
        "list_domains",
    ),
    "qctl.qemu.migration": (
        "MigrationOutcome",
        "MigrationProgress",
    ),
    "qctl.qemu.opening": ("Opening",),
    "qctl.qemu.domain": (
        "DetachResult",
        "Domain",
        "HostPaths",
        "abort_job",
    ),
    "qctl.qemu.dryrun": (
        "command_line",
    ),
    "qctl.qemu.events": (
        "DeviceAdded",
        "DeviceRemoved",
        "DomainEvent",
        "EventStream",
        "NICRxFilterChanged",
        "OtherEvent",
        "Shutdown",
        "UnplugRejected",
    ),
    "qctl.qemu.inventory": (
        "DomainState",
        "discard_damaged",
        "list_domain_states",
    ),
    "qctl.qemu.ledger": (
        "DeviceKind",
        "EntryState",
        "Ledger",
        "LedgerEntry",
    ),
    "qctl.qemu.network": (
        "Allocation",
        "NetworkStore",
    ),
    "qctl.qemu.process": (
        "Launcher",
    ),
    "qctl.qemu.rawmonitor": (
        "human_monitor_command",
        "monitor_command",
        "parse_monitor_command",
    ),
    "qctl.qemu.runstate": (
        "RunState",
    ),
    "qctl.qemu.state": (
        "StateRoot",
    ),
    "qctl.qemu.txn": (
        "JobRecord",
    ),
    "qctl.qmp": (
        "EventSubscription",
        "QMPClient",
        "QMPEvent",
        "connect_qmp",
    ),
}
_HOME = {name: module for module, names in _LAZY.items() for name in names}


def __getattr__(name: str) -> Any:
    """Import the module that defines the public ``name`` on first access, and keep it."""
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module 'qctl' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOME))


logging.getLogger(__name__).addHandler(logging.NullHandler())
