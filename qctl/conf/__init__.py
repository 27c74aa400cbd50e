"""The configuration model: domain, device and network-pool definitions.

Parse libvirt-style XML into frozen ``*Def`` objects (:mod:`~qctl.conf.parse`), check the
rules on them (:mod:`~qctl.conf.validate`), write them back (:mod:`~qctl.conf.format`) or
as JSON-ready data (:mod:`~qctl.conf.jsonable`). lxml is used here and nowhere else, behind
:mod:`~qctl.conf.xml`.
"""

from qctl.conf.format import format_xml
from qctl.conf.jsonable import JSONValue, def_to_dict
from qctl.conf.model import (
    VIRTIO_MODELS,
    ControllerDef,
    ControllerModel,
    DeviceDef,
    DevicesDef,
    DomainDef,
    DomainType,
    ElementDef,
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
)
from qctl.conf.parse import (
    AnyDef,
    check,
    load,
    load_domain,
    load_network,
    parse_device,
    parse_domain,
    parse_network,
)
from qctl.conf.validate import validate_device, validate_domain, validate_network

__all__ = [
    "VIRTIO_MODELS",
    "AnyDef",
    "ControllerDef",
    "ControllerModel",
    "DeviceDef",
    "DevicesDef",
    "DomainDef",
    "DomainType",
    "ElementDef",
    "ForwardDef",
    "ForwardMode",
    "HostdevDef",
    "InterfaceDef",
    "InterfaceDriverDef",
    "InterfaceSourceDef",
    "InterfaceType",
    "JSONValue",
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
    "load_domain",
    "load_network",
    "parse_device",
    "parse_domain",
    "parse_network",
    "validate_device",
    "validate_domain",
    "validate_network",
]
