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
    HostError,
    HotplugError,
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
        AnyDef,
        ControllerDef,
        ControllerModel,
        DeviceDef,
        DevicesDef,
        DomainDef,
        DomainType,
        ForwardDef,
        ForwardMode,
        HostdevDef,
        InterfaceDef,
        InterfaceDriverDef,
        InterfaceSourceDef,
        InterfaceType,
        LinkState,
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
        check,
        def_to_dict,
        format_xml,
        load,
        parse_device,
        parse_domain,
        parse_network,
        validate_device,
        validate_domain,
        validate_network,
    )
    from qctl.host import LinkStats, link_stats
    from qctl.qemu.domain import DetachResult, Domain, DomainInfo, HostPaths
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
    from qctl.qemu.network import Allocation, NetworkStore
    from qctl.qemu.rawmonitor import (
        human_monitor_command,
        monitor_command,
        parse_monitor_command,
    )
    from qctl.qemu.state import StateRoot
    from qctl.qmp import EventSubscription, QMPClient, QMPEvent, connect_qmp

__version__ = "0.1.0"

__all__ = [
    # errors
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
    # value types
    "IfName",
    "MACAddress",
    "PCIAddress",
    # configuration model
    "DomainDef",
    "OSDef",
    "MemoryDef",
    "VCPUDef",
    "DevicesDef",
    "DeviceDef",
    "ControllerDef",
    "SerialDef",
    "InterfaceDef",
    "InterfaceSourceDef",
    "InterfaceDriverDef",
    "TeamingDef",
    "HostdevDef",
    "NetworkDef",
    "ForwardDef",
    "USBAddress",
    "RawXML",
    "AnyDef",
    "DomainType",
    "ControllerModel",
    "SerialType",
    "InterfaceType",
    "NetDriverName",
    "TeamingType",
    "LinkState",
    "ForwardMode",
    "parse_domain",
    "parse_network",
    "parse_device",
    "load",
    "check",
    "format_xml",
    "def_to_dict",
    "validate_domain",
    "validate_device",
    "validate_network",
    # the QEMU driver
    "Domain",
    "DomainInfo",
    "DetachResult",
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
    "monitor_command",
    "human_monitor_command",
    "parse_monitor_command",
    "LinkStats",
    "link_stats",
    # capabilities and the QMP monitor
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
        "DomainDef",
        "DomainType",
        "ForwardDef",
        "ForwardMode",
        "HostdevDef",
        "InterfaceDef",
        "InterfaceDriverDef",
        "InterfaceSourceDef",
        "InterfaceType",
        "LinkState",
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
        "check",
        "def_to_dict",
        "format_xml",
        "load",
        "parse_device",
        "parse_domain",
        "parse_network",
        "validate_device",
        "validate_domain",
        "validate_network",
    ),
    "qctl.qemu.domain": (
        "DetachResult",
        "Domain",
        "DomainInfo",
        "HostPaths",
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
    "qctl.qemu.network": (
        "Allocation",
        "NetworkStore",
    ),
    "qctl.qemu.state": ("StateRoot",),
    "qctl.qemu.rawmonitor": (
        "monitor_command",
        "human_monitor_command",
        "parse_monitor_command",
    ),
    "qctl.host": ("LinkStats", "link_stats"),
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
