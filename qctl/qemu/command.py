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

from qctl.conf import ControllerModel, DomainDef, DomainType, InterfaceType
from qctl.qemu.chardev import serial_chardev, serial_device_props
from qctl.qemu.confine import Confinement, PassedFile, confine_args, file_args
from qctl.qemu.console import console_log_option
from qctl.qemu.disk import disk_arg_props
from qctl.qemu.nic import (
    NICResources,
    Props,
    hostdev_props,
    interface_device_props,
    netdev_props,
    usb_controller_props,
)
from qctl.qemu.placement import root_port_props
from qctl.record import record

__all__ = ["Features", "build_command", "format_props"]


@record
class Features:
    """What the builder needs to know about the QEMU binary, taken from its capabilities."""

    json_netdev: bool = True
    json_device: bool = True
    failover: bool = True
    # QEMU's data directories (-L), for a binary outside the system prefixes.
    data_dirs: tuple[str, ...] = ()


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


def _serial_args(
    domain: DomainDef,
    features: Features,
    files: Mapping[str, PassedFile],
    console_dir: str | None,
) -> list[str]:
    """Each serial port's chardev and ``isa-serial``; with ``console_dir``, the first one's
    output is also logged to ``console.log`` there, which :mod:`qctl.qemu.console` reads."""
    args: list[str] = []
    for index, serial in enumerate(domain.serials):
        props = serial_device_props(serial, index)
        passed = files.get(serial.source_path or "")
        path = passed.qemu_path if passed else None
        chardev = serial_chardev(serial, path=path)
        if index == 0 and console_dir is not None:
            chardev += console_log_option(console_dir)
        args += ["-chardev", chardev]
        args += ["-device", format_props(props, as_json=features.json_device, head="driver")]
    return args


def _disk_args(domain: DomainDef, features: Features) -> list[str]:
    """Disk controllers, then each disk's block nodes and device (:mod:`qctl.qemu.disk`).

    ``-blockdev`` has always taken JSON; ``-device`` follows the QEMU's syntax.
    """
    args: list[str] = []
    for option, props in disk_arg_props(domain):
        as_json = option == "-blockdev" or features.json_device
        args += [option, format_props(props, as_json=as_json, head="driver")]
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
    usb = usb_controller_props(domain)
    if usb is not None:
        args += ["-device", format_props(usb, as_json=features.json_device, head="driver")]
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
        if hostdev.unassigned:  # prepared and held by the host side, not given to the guest
            continue
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
    pidfile: str | None = None,
    confinement: Confinement | None = None,
    files: Mapping[str, PassedFile] | None = None,
    incoming: str | None = None,
    console_dir: str | None = None,
) -> list[str]:
    """The argv that starts ``domain``.

    ``pidfile``: where QEMU writes its pid; its path on QEMU's command line also lets a
    later qctl find a QEMU whose ``start`` was killed before it recorded the pid.
    ``confinement`` adds the user QEMU drops to and its sandbox; ``files`` maps the paths
    of files qctl opened for QEMU to their fds, passed in fd sets (see
    :mod:`qctl.qemu.confine`).

    ``nics`` maps interface aliases to their prepared fds; ``monitor`` is the QMP chardev's
    backend, ``fd=N`` for a listening socket qctl made (or ``path=…``), and
    ``extra_monitors`` more of them: QEMU serves one client per monitor, so several let
    several qctl processes (an event listener and a command) talk to it at once.
    ``incoming`` makes it the destination of a migration (``-incoming``): ``defer`` waits
    for ``migrate-incoming``, which lets the driver set capabilities first.
    ``console_dir``, the domain's state directory, logs the first serial port's output there
    for :mod:`qctl.qemu.console`.
    """
    accel = "kvm" if domain.type is DomainType.KVM else "tcg"
    argv = [
        binary,
        *(arg for directory in features.data_dirs for arg in ("-L", directory)),
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
    if pidfile is not None:
        argv += ["-pidfile", pidfile]
    passed = files or {}
    argv += ["-display", "none", *_monitor_args(monitor, *extra_monitors)]
    argv += [
        *confine_args(confinement),
        *file_args(passed),
        *_boot_args(domain),
        *_controller_args(domain, features),
        *_disk_args(domain, features),
        *_serial_args(domain, features, passed, console_dir),
        *_nic_args(domain, features, nics),
        *_hostdev_args(domain, features),
        "-msg",
        "timestamp=on",
    ]
    if incoming is not None:
        argv += ["-incoming", incoming]
    return argv
