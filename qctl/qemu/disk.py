"""Disks: what libvirt fills in for them, and their ``-blockdev`` and ``-device`` options.

Planning (pure, like the rest of :mod:`qctl.qemu.plan`): each sata or scsi disk gets its
place on a controller from its target name, as libvirt derives it (``sdb`` → unit 1; six
units per sata controller, seven per scsi one), the controllers those places need are added
when the domain lacks them (scsi ones as ``virtio-scsi``; on q35 sata controller 0 is the
chipset's own AHCI at ``00:1f.2``), and disks and controllers get libvirt's aliases
(``virtio-disk0``, ``sata0-0-1``, ``scsi0-0-0-0``, ``scsi0``, ``sata0``/``ide``).

Arguments, spelled as libvirt 9.0 spells them, property for property: every disk with a
source is two block nodes, a protocol node ``libvirt-N-storage`` (``file``, or ``host_device``
for block devices) and a format node ``libvirt-N-format`` (``raw`` or ``qcow2``) on top,
numbered like libvirt numbers them (the first disk gets the highest N); then the guest
device (``virtio-blk-pci``, ``ide-hd``/``ide-cd`` on an AHCI port, ``scsi-hd``/``scsi-cd``
on a virtio-scsi bus) with ``drive`` naming the format node.

How the image reaches QEMU is decided in one place, :func:`storage_props`: a path today;
a caller that passes images as fds gives another ``filename`` there.
"""

from __future__ import annotations

import dataclasses

from qctl.conf import (
    ControllerDef,
    DeviceDef,
    DiskBus,
    DiskControllerDef,
    DiskControllerType,
    DiskDef,
    DiskDevice,
    DiskFormat,
    DiskType,
    DomainDef,
    DriveAddress,
    RawXML,
)
from qctl.errors import UnsupportedError
from qctl.qemu.nic import Props, pci_addr
from qctl.qemu.placement import bus_id, is_q35
from qctl.types import PCIAddress

__all__ = [
    "Q35_AHCI_ADDRESS",
    "SCSI_MODEL",
    "disk_arg_props",
    "disk_device_props",
    "disk_controller_props",
    "disk_index",
    "format_props_of",
    "node_names",
    "plan_disks",
    "storage_props",
]

SCSI_MODEL = "virtio-scsi"
"""The only SCSI controller model qctl creates (libvirt's default on x86 is ``lsi``)."""

_UNITS = {DiskBus.SATA: 6, DiskBus.SCSI: 7}
_CONTROLLER_TYPE = {DiskBus.SATA: DiskControllerType.SATA, DiskBus.SCSI: DiskControllerType.SCSI}
#: where q35's built-in AHCI controller (sata index 0) sits
Q35_AHCI_ADDRESS = PCIAddress(0, 0, 0x1F, 2)


def disk_index(target_dev: str) -> int:
    """The index a target name stands for, as libvirt reads it: ``vda`` 0, ``sdb`` 1,
    ``vdz`` 25, ``vdaa`` 26 (the letters after the two-letter prefix, in base 26)."""
    letters = target_dev[2:]
    if not letters or not all("a" <= c <= "z" for c in letters):
        raise UnsupportedError(
            f"disk target {target_dev!r} is not a prefix and letters (vda, sdb, …)",
            capability="disk-target",
        )
    index = 0
    for char in letters:
        index = index * 26 + (ord(char) - ord("a") + 1)
    return index - 1


def _controller_alias(domain: DomainDef, kind: DiskControllerType, index: int) -> str:
    if kind is DiskControllerType.SATA and index == 0 and is_q35(domain):
        return "ide"  # the chipset's AHCI, as QEMU names it on q35
    return f"{kind.value}{index}"


def _disk_alias(disk: DiskDef, bus: DiskBus) -> str:
    if bus is DiskBus.VIRTIO:
        return f"virtio-disk{disk_index(disk.target_dev)}"
    assert disk.drive is not None
    drive = disk.drive
    if bus is DiskBus.SATA:
        return f"sata{drive.controller}-{drive.bus}-{drive.unit}"
    return f"scsi{drive.controller}-{drive.bus}-{drive.target}-{drive.unit}"


def _planned_disk(disk: DiskDef) -> DiskDef:
    bus = disk.bus
    assert bus is not None  # validated
    drive = disk.drive
    if bus is not DiskBus.VIRTIO and drive is None:
        index = disk_index(disk.target_dev)
        drive = DriveAddress(controller=index // _UNITS[bus], unit=index % _UNITS[bus])
    disk = dataclasses.replace(disk, target_bus=bus, drive=drive)
    if disk.alias is None:
        disk = dataclasses.replace(disk, alias=_disk_alias(disk, bus))
    return disk


def _planned_controller(domain: DomainDef, ctl: DiskControllerDef) -> DiskControllerDef:
    if ctl.type is DiskControllerType.SCSI:
        model = ctl.model or SCSI_MODEL
        if model != SCSI_MODEL:
            raise UnsupportedError(
                f"unsupported configuration: scsi controller model {model!r} "
                f"(qctl creates {SCSI_MODEL!r})",
                capability="scsi-controller",
            )
        ctl = dataclasses.replace(ctl, model=model)
    if ctl.type is DiskControllerType.SATA and ctl.index == 0 and is_q35(domain):
        ctl = dataclasses.replace(ctl, address=ctl.address or Q35_AHCI_ADDRESS)
    if ctl.alias is None:
        ctl = dataclasses.replace(ctl, alias=_controller_alias(domain, ctl.type, ctl.index))
    return ctl


def plan_disks(domain: DomainDef) -> DomainDef:
    """Drive places, missing controllers and aliases for every disk (see the module).

    Missing controllers are added after the last controller in the document, as libvirt
    lists them.
    """
    items: list[DeviceDef | RawXML] = []
    for item in domain.devices.items:
        if isinstance(item, DiskDef):
            item = _planned_disk(item)
        elif isinstance(item, DiskControllerDef):
            item = _planned_controller(domain, item)
        items.append(item)
    have = {(c.type, c.index) for c in items if isinstance(c, DiskControllerDef)}
    needed = sorted(
        {
            (_CONTROLLER_TYPE[d.target_bus], d.drive.controller)
            for d in items
            if isinstance(d, DiskDef) and d.target_bus in _CONTROLLER_TYPE and d.drive
        }
        - have
    )
    added = [
        _planned_controller(domain, DiskControllerDef(type=kind, index=index))
        for kind, index in needed
    ]
    last = max(
        (i for i, d in enumerate(items) if isinstance(d, ControllerDef | DiskControllerDef)),
        default=-1,
    )
    items[last + 1 : last + 1] = added
    return dataclasses.replace(
        domain, devices=dataclasses.replace(domain.devices, items=tuple(items))
    )


def node_names(domain: DomainDef) -> dict[str, int]:
    """Disk alias → N of its ``libvirt-N-storage``/``libvirt-N-format`` nodes, for disks
    with a source: libvirt counts down, the first such disk getting the highest N."""
    sourced = [d for d in domain.disks if d.source is not None and d.alias is not None]
    return {d.alias: len(sourced) - i for i, d in enumerate(sourced) if d.alias is not None}


def storage_props(disk: DiskDef, node: int, *, filename: str | None = None) -> Props:
    """The protocol node of ``disk``: how QEMU reaches the image.

    ``filename`` replaces the path (``/dev/fdset/N`` for an image passed as an fd).
    A block device is ``host_device`` even for a cdrom: libvirt uses ``host_cdrom`` only
    for a path that is a real CD-ROM drive (an ioctl on the host), which the pure builder
    does not ask.
    """
    assert disk.source is not None
    return {
        "driver": "file" if disk.type is DiskType.FILE else "host_device",
        "filename": filename or disk.source,
        "node-name": f"libvirt-{node}-storage",
        "auto-read-only": True,
        "discard": "unmap",
    }


def format_props_of(disk: DiskDef, node: int) -> Props:
    """The format node of ``disk``, on top of its protocol node."""
    read_only = disk.readonly or disk.device is DiskDevice.CDROM
    return {
        "node-name": f"libvirt-{node}-format",
        "read-only": read_only,
        "driver": (disk.format or DiskFormat.RAW).value,
        "file": f"libvirt-{node}-storage",
    }


def disk_controller_props(domain: DomainDef, ctl: DiskControllerDef) -> Props | None:
    """``-device`` of a sata or scsi controller; ``None`` for q35's built-in AHCI."""
    assert ctl.alias is not None
    if ctl.type is DiskControllerType.SATA and ctl.index == 0 and is_q35(domain):
        return None
    props: Props = {
        "driver": "virtio-scsi-pci" if ctl.type is DiskControllerType.SCSI else "ahci",
        "id": ctl.alias,
    }
    if ctl.address is not None:
        props["bus"] = bus_id(domain, ctl.address.bus)
        props["addr"] = pci_addr(ctl.address.slot, ctl.address.function)
    return props


def _controller_of(domain: DomainDef, kind: DiskControllerType, index: int) -> DiskControllerDef:
    found = next((c for c in domain.disk_controllers if c.type is kind and c.index == index), None)
    if found is None or found.alias is None:
        raise UnsupportedError(
            f"no {kind.value} controller with index {index} for a disk", capability="disk"
        )
    return found


def disk_device_props(domain: DomainDef, disk: DiskDef, node: int | None) -> Props:
    """``-device`` of ``disk``; ``node`` is its block node number (``None``: no medium)."""
    assert disk.alias is not None and disk.target_bus is not None
    cdrom = disk.device is DiskDevice.CDROM
    props: Props = {}
    if disk.target_bus is DiskBus.VIRTIO:
        props["driver"] = "virtio-blk-pci"
        if disk.address is not None:
            props["bus"] = bus_id(domain, disk.address.bus)
            props["addr"] = pci_addr(disk.address.slot, disk.address.function)
    else:
        assert disk.drive is not None
        drive = disk.drive
        ctl = _controller_of(domain, _CONTROLLER_TYPE[disk.target_bus], drive.controller)
        if disk.target_bus is DiskBus.SATA:
            props["driver"] = "ide-cd" if cdrom else "ide-hd"
            props["bus"] = f"{ctl.alias}.{drive.unit}"
        else:
            props["driver"] = "scsi-cd" if cdrom else "scsi-hd"
            props["bus"] = f"{ctl.alias}.0"
            props["channel"] = drive.bus
            props["scsi-id"] = drive.target
            props["lun"] = drive.unit
            props["device_id"] = disk.serial or f"drive-{disk.alias}"
    if node is not None:
        props["drive"] = f"libvirt-{node}-format"
    props["id"] = disk.alias
    if disk.boot_order is not None:
        props["bootindex"] = disk.boot_order
    if disk.serial is not None:
        props["serial"] = disk.serial
    return props


def disk_arg_props(domain: DomainDef) -> list[tuple[str, Props]]:
    """Every ``(option, props)`` the disks need, in order: controllers, then per disk its
    two block nodes and its device."""
    out: list[tuple[str, Props]] = []
    for ctl in domain.disk_controllers:
        props = disk_controller_props(domain, ctl)
        if props is not None:
            out.append(("-device", props))
    nodes = node_names(domain)
    for disk in domain.disks:
        assert disk.alias is not None
        node = nodes.get(disk.alias)
        if node is not None:
            out.append(("-blockdev", storage_props(disk, node)))
            out.append(("-blockdev", format_props_of(disk, node)))
        out.append(("-device", disk_device_props(domain, disk, node)))
    return out
