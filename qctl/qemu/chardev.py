"""Serial ports: their ``-chardev`` backends and ``isa-serial`` devices, and the ptys QEMU
opened for them.

The arguments are libvirt's for the same ``<serial>``: the chardev is ``char`` + the
port's alias (``charserial0``), its backend ``pty``, ``file,path=…``, ``null``, or a UNIX
``socket,path=…`` (with ``server=on,wait=off`` when ``<source mode='bind'>``: QEMU
listens). A pty's path is only known once QEMU runs: :func:`record_ptys` puts the paths
``query-chardev`` reports into the live definition, as ``<source path='/dev/pts/N'/>``,
the way libvirt shows them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from qctl.conf import DeviceDef, DomainDef, RawXML, SerialDef, SerialType
from qctl.qemu.monitor import Monitor
from qctl.qemu.nic import Props

__all__ = [
    "chardev_id",
    "record_ptys",
    "serial_chardev",
    "serial_device_props",
    "with_pty_paths",
]

_PTY_PREFIX = "pty:"


def chardev_id(serial: SerialDef) -> str:
    """The ``-chardev`` id of a serial port (libvirt's ``char`` + alias)."""
    assert serial.alias is not None
    return f"char{serial.alias}"


def _path(path: str | None) -> str:
    assert path is not None  # validated: file and unix ports have one
    return path.replace(",", ",,")


def serial_chardev(serial: SerialDef, *, path: str | None = None) -> str:
    """The ``-chardev`` argument of a serial port (``key=value`` syntax, as libvirt).

    ``path`` replaces a file port's path (``/dev/fdset/N`` when qctl opened the file for a
    confined QEMU, see :mod:`qctl.qemu.confine`).
    """
    head = f"id={chardev_id(serial)}"
    if serial.type is SerialType.FILE:
        return f"file,{head},path={_path(path or serial.source_path)}"
    if serial.type is SerialType.UNIX:
        listen = ",server=on,wait=off" if serial.source_mode != "connect" else ""
        return f"socket,{head},path={_path(serial.source_path)}{listen}"
    if serial.type is SerialType.NULL:
        return f"null,{head}"
    return f"pty,{head}"


def serial_device_props(serial: SerialDef, index: int) -> Props:
    """The ``isa-serial`` device of the ``index``-th serial port."""
    assert serial.alias is not None
    return {
        "driver": "isa-serial",
        "chardev": chardev_id(serial),
        "id": serial.alias,
        "index": index,
    }


def record_ptys(domain: DomainDef, chardevs: Mapping[str, str]) -> DomainDef:
    """``domain`` with each pty serial port's ``source_path`` set to the pty QEMU opened.

    ``chardevs`` maps chardev ids to QEMU's ``filename`` for them (``pty:/dev/pts/3``), as
    ``query-chardev`` reports them; a port QEMU did not report keeps what it had.
    """
    items: list[DeviceDef | RawXML] = []
    for item in domain.devices.items:
        if isinstance(item, SerialDef) and item.type is SerialType.PTY and item.alias:
            filename = chardevs.get(chardev_id(item), "")
            if filename.startswith(_PTY_PREFIX):
                item = dataclasses.replace(item, source_path=filename[len(_PTY_PREFIX) :])
        items.append(item)
    return dataclasses.replace(
        domain, devices=dataclasses.replace(domain.devices, items=tuple(items))
    )


async def with_pty_paths(monitor: Monitor, domain: DomainDef) -> DomainDef:
    """The live ``domain`` of a QEMU just started, with the paths of its pty serial ports
    (asked only when it has one)."""
    if not any(s.type is SerialType.PTY for s in domain.serials):
        return domain
    return record_ptys(domain, await monitor.chardevs())
