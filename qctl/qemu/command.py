"""The pure command-line builder: (live domain, features, prepared host resources) → argv.

No I/O, no clock, no asyncio: everything the builder needs comes in as values, which is what
makes the golden tests cheap. The domain must already be planned (aliases, addresses, the
vhost choice recorded in each interface's ``<driver name>``; see :mod:`qctl.qemu.plan`).

QEMU starts paused (``-S``): the driver applies what has no command-line switch (``set_link``
for ``<link state='down'/>``) before it resumes the CPUs.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from qctl.conf import ControllerModel, DomainDef, DomainType, InterfaceType, SerialType
from qctl.qemu.console import console_chardev
from qctl.qemu.nic import NICResources, Props, hostdev_props, interface_device_props, netdev_props
from qctl.qemu.placement import root_port_props

__all__ = ["Features", "build_command", "format_props"]


@dataclass(frozen=True, slots=True)
class Features:
    """What the builder needs to know about the QEMU binary, taken from its capabilities."""

    json_netdev: bool = True
    json_device: bool = True
    failover: bool = True


def format_props(props: Props, *, as_json: bool, head: str) -> str:
    """One ``-netdev``/``-device`` argument: JSON, or ``head-value,key=value,…``.

    In the ``key=value`` syntax booleans are ``on``/``off`` and every comma inside a value is
    doubled, which is QEMU's escape; ``head`` names the key whose value goes first, bare
    (``driver`` or ``type``).
    """
    if as_json:
        return json.dumps(props, separators=(",", ":"))
    parts = [_kv_value(props[head])]
    for key, value in props.items():
        if key != head:
            parts.append(f"{key}={_kv_value(value)}")
    return ",".join(parts)


def _kv_value(value: str | int | bool) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value).replace(",", ",,")


def _memory_args(domain: DomainDef) -> list[str]:
    return ["-m", f"size={domain.memory.kib}k"]


def _smp_args(domain: DomainDef) -> list[str]:
    if domain.vcpu is None:
        return ["-smp", "1"]
    if domain.vcpu.current is not None and domain.vcpu.current != domain.vcpu.count:
        return ["-smp", f"{domain.vcpu.current},maxcpus={domain.vcpu.count}"]
    return ["-smp", str(domain.vcpu.count)]


def _boot_args(domain: DomainDef) -> list[str]:
    args: list[str] = []
    if domain.os.kernel:
        args += ["-kernel", domain.os.kernel]
    if domain.os.initrd:
        args += ["-initrd", domain.os.initrd]
    if domain.os.cmdline:
        args += ["-append", domain.os.cmdline]
    return args


def _chardev_path(path: str) -> str:
    return path.replace(",", ",,")


def _serial_args(domain: DomainDef, features: Features, console_dir: str | None) -> list[str]:
    args: list[str] = []
    console = next((s for s in domain.serials if s.type is SerialType.PTY), None)
    for index, serial in enumerate(domain.serials):
        assert serial.alias is not None
        chardev = f"char{serial.alias}"
        if serial.type is SerialType.FILE:
            assert serial.source_path is not None
            args += ["-chardev", f"file,id={chardev},path={_chardev_path(serial.source_path)}"]
        elif serial is console and console_dir is not None:
            args += console_chardev(chardev, console_dir)
        else:
            args += ["-chardev", f"pty,id={chardev}"]
        props: Props = {
            "driver": "isa-serial",
            "chardev": chardev,
            "id": serial.alias,
            "index": index,
        }
        args += ["-device", format_props(props, as_json=features.json_device, head="driver")]
    return args


def _controller_args(domain: DomainDef, features: Features) -> list[str]:
    args: list[str] = []
    for ctl in domain.controllers:
        if ctl.model.is_root:
            continue
        if ctl.model not in (ControllerModel.PCIE_ROOT_PORT, ControllerModel.PCI_BRIDGE):
            continue
        props = root_port_props(domain, ctl)
        args += ["-device", format_props(props, as_json=features.json_device, head="driver")]
    return args


def _nic_args(domain: DomainDef, features: Features, nics: Mapping[str, NICResources]) -> list[str]:
    args: list[str] = []
    for iface in domain.interfaces:
        assert iface.alias is not None
        if iface.type is not InterfaceType.HOSTDEV:
            backend = netdev_props(iface, nics.get(iface.alias, NICResources()))
            args += ["-netdev", format_props(backend, as_json=features.json_netdev, head="type")]
        props = interface_device_props(domain, iface, failover=features.failover)
        args += ["-device", format_props(props, as_json=features.json_device, head="driver")]
    return args


def _hostdev_args(domain: DomainDef, features: Features) -> list[str]:
    args: list[str] = []
    for hostdev in domain.hostdevs:
        props = hostdev_props(domain, hostdev)
        args += ["-device", format_props(props, as_json=features.json_device, head="driver")]
    return args


def _monitor_args(*backends: str) -> list[str]:
    """A QMP monitor per backend: ``charmonitor``/``monitor``, then ``…1``, ``…2`` (libvirt's
    name for the first)."""
    args: list[str] = []
    for index, backend in enumerate(backends):
        suffix = str(index) if index else ""
        args += [
            "-chardev",
            f"socket,id=charmonitor{suffix},{backend},server=on,wait=off",
            "-mon",
            f"chardev=charmonitor{suffix},id=monitor{suffix},mode=control",
        ]
    return args


def build_command(
    domain: DomainDef,
    features: Features,
    nics: Mapping[str, NICResources],
    *,
    binary: str,
    monitor: str,
    extra_monitors: Sequence[str] = (),
    console_dir: str | None = None,
) -> list[str]:
    """The argv that starts ``domain``.

    ``nics`` maps interface aliases to their prepared fds; ``monitor`` is the QMP chardev's
    backend, ``fd=N`` for a listening socket qctl made (or ``path=…``), and
    ``extra_monitors`` more of them: QEMU serves one client per monitor, so several let
    several qctl processes (an event listener and a command) talk to it at once.
    ``console_dir``, the domain's state directory, makes the first ``<serial type='pty'>``
    the console qctl owns (see :mod:`qctl.qemu.console`).
    """
    accel = "kvm" if domain.type is DomainType.KVM else "tcg"
    argv = [
        binary,
        "-name",
        f"guest={domain.name.replace(',', ',,')},debug-threads=on",
        "-S",
        "-no-user-config",
        "-nodefaults",
        "-machine",
        domain.os.machine or "pc",
        "-accel",
        accel,
        *_memory_args(domain),
        *_smp_args(domain),
    ]
    if domain.uuid is not None:
        argv += ["-uuid", str(domain.uuid)]
    argv += ["-display", "none", *_monitor_args(monitor, *extra_monitors)]
    argv += [
        *_boot_args(domain),
        *_controller_args(domain, features),
        *_serial_args(domain, features, console_dir),
        *_nic_args(domain, features, nics),
        *_hostdev_args(domain, features),
        "-msg",
        "timestamp=on",
    ]
    return argv
