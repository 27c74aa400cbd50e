"""The command line a domain would start with, built without touching the host.

``qctl domxml-to-argv`` (like ``virsh domxml-to-native``) and the golden tests use this. It
runs the same steps as a real start, with the host side simulated from facts instead of done:

1. :func:`~qctl.qemu.plan.plan` validates the domain against its rules and the caps and fills
   in MACs, aliases and guest PCI addresses;
2. every tap NIC gets the vhost-net decision of :func:`qctl.host.vhost.decide_vhost` (the one
   :func:`~qctl.host.choose_vhost` makes on the host), with the device's availability taken
   from ``vhost_net_available`` instead of an ``open()``, and the choice is recorded in the
   live definition as :mod:`qctl.qemu.prepare` records it (``<driver name>``, ``<target
   dev>``); a ``type='network'`` NIC's pool is looked up and must be a bridge pool;
3. :func:`~qctl.qemu.command.build_command` builds the argv, with symbolic fds.

``domxml-to-argv`` never runs the document's ``<emulator>`` to learn what it can do
(:func:`command_line`): it uses that binary's cached capabilities when the cache has them, or
probes the binary the caller names (``--emulator``), or the default one (``$QCTL_QEMU``,
qemu-system-x86_64); only ``trust_emulator`` (``--probe-document-emulator``) probes the
document's. A dry run may be fed any document; running what it names would be running the
author's program as the caller.

The argv is that of an unconfined start: a start as root adds the options of
:mod:`qctl.qemu.confine` (``-runas``/``-run-with``, ``-sandbox``) and passes serial log
files in fd sets.

The fds are names, not numbers, so the output does not depend on the process that printed it:
``tapfd-ALIAS-Q`` and ``vhostfd-ALIAS-Q`` for queue ``Q`` of interface ``ALIAS``, and
``fd=monitorfd`` for the QMP socket. Taps keep their ``<target dev>`` name, else get
``vnet0``, ``vnet1``, … in document order (the kernel's real choice is not known in advance).
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import os
from collections.abc import Callable
from pathlib import Path

from qctl.caps import CapsCache, QEMUCaps
from qctl.conf import DeviceDef, DomainDef, DomainType, InterfaceDef, NetworkDef, RawXML
from qctl.errors import ProcessError, StateError, UnsupportedError
from qctl.host.vhost import decide_vhost
from qctl.qemu.command import build_command
from qctl.qemu.network import NetworkStore
from qctl.qemu.nic import NICResources
from qctl.qemu.plan import MACSource, features_from_caps, located, plan, random_mac
from qctl.qemu.prepare import bridge_of, needs_tap, record_choice, vhost_mode
from qctl.qemu.state import StateRoot
from qctl.record import record

__all__ = [
    "DEFAULT_BINARY",
    "DRY_RUN_MONITOR",
    "DryRun",
    "command_line",
    "dry_run",
    "dry_run_argv",
    "dry_run_caps",
]

NetworkLookup = Callable[[str], NetworkDef]

DEFAULT_BINARY = "qemu-system-x86_64"
"""The emulator when the domain names none in ``<emulator>``."""

DRY_RUN_MONITOR = "fd=monitorfd"
"""The QMP chardev backend of a dry run: the listening socket qctl would pass, by name."""


@record
class DryRun:
    """A dry run's outcome: the live definition a start would record, and its argv."""

    domain: DomainDef
    argv: list[str]
    nics: dict[str, NICResources]


def _no_networks(name: str) -> NetworkDef:
    raise StateError(f"no network named {name!r} is known to this dry run")


def _tap_fd(alias: str, queue: int) -> str:
    return f"tapfd-{alias}-{queue}"


def _vhost_fd(alias: str, queue: int) -> str:
    return f"vhostfd-{alias}-{queue}"


def _simulate_interface(
    iface: InterfaceDef,
    *,
    tap_name: str,
    accel_is_kvm: bool,
    vhost_net_available: bool,
    networks: NetworkLookup,
) -> tuple[InterfaceDef, NICResources]:
    """What :func:`qctl.qemu.prepare.prepare_interface` would make of a tap NIC."""
    assert iface.alias is not None
    queues = iface.driver.queues if iface.driver and iface.driver.queues else 1
    use_vhost, _ = decide_vhost(
        vhost_mode(iface),
        accel_is_kvm=accel_is_kvm,
        virtio=iface.is_virtio,
        unavailable=None if vhost_net_available else "/dev/vhost-net cannot be opened",
    )
    bridge_of(iface, networks)  # a missing or non-bridge pool fails here, as on a start
    resources = NICResources(
        tap_fds=tuple(_tap_fd(iface.alias, q) for q in range(queues)),
        vhost_fds=tuple(_vhost_fd(iface.alias, q) for q in range(queues)) if use_vhost else (),
        tap_name=tap_name,
    )
    return record_choice(iface, tap_name, use_vhost), resources


def _tap_names(domain: DomainDef) -> dict[str, str]:
    """Alias → tap name: ``<target dev>`` when given, else the first free ``vnetN``."""
    taps = [i for i in domain.interfaces if needs_tap(i)]
    taken = {str(i.target_dev) for i in taps if i.target_dev is not None}
    free = (f"vnet{n}" for n in itertools.count() if f"vnet{n}" not in taken)
    names: dict[str, str] = {}
    for iface in taps:
        assert iface.alias is not None
        names[iface.alias] = str(iface.target_dev) if iface.target_dev else next(free)
    return names


def dry_run(
    defn: DomainDef,
    caps: QEMUCaps,
    *,
    vhost_net_available: bool | None = None,
    networks: NetworkLookup | None = None,
    new_mac: MACSource = random_mac,
    binary: str | None = None,
) -> DryRun:
    """Plan ``defn`` for ``caps`` and build its argv as a start would, touching nothing.

    ``vhost_net_available`` says whether ``/dev/vhost-net`` would open (default: what the
    caps recorded of the host, ``caps.host.vhost_net``); ``networks`` finds a network pool by
    name (without it a ``type='network'`` interface is refused with :class:`StateError`);
    ``new_mac`` makes MACs for interfaces without one; ``binary`` replaces ``<emulator>``.

    Raises what a start would raise before QEMU runs: :class:`~qctl.errors.ConfigError` for
    an invalid domain, :class:`~qctl.errors.UnsupportedError` for what this QEMU or host cannot
    do (including ``<driver name='vhost'/>`` on KVM when vhost-net is unavailable).
    """
    available = caps.host.vhost_net if vhost_net_available is None else vhost_net_available
    lookup = networks if networks is not None else _no_networks
    planned = plan(defn, caps, new_mac=new_mac)
    accel_is_kvm = planned.type is DomainType.KVM
    tap_names = _tap_names(planned)
    nics: dict[str, NICResources] = {}
    items: list[DeviceDef | RawXML] = []
    for item in planned.devices.items:
        if isinstance(item, InterfaceDef) and needs_tap(item):
            alias = item.alias
            assert alias is not None
            try:
                item, nics[alias] = _simulate_interface(
                    item,
                    tap_name=tap_names[alias],
                    accel_is_kvm=accel_is_kvm,
                    vhost_net_available=available,
                    networks=lookup,
                )
            except (UnsupportedError, StateError) as exc:  # named with the file and line
                raise located(exc, defn.source, item) from None
        items.append(item)
    live = dataclasses.replace(
        planned, devices=dataclasses.replace(planned.devices, items=tuple(items))
    )
    argv = build_command(
        live,
        features_from_caps(caps),
        nics,
        binary=binary or live.devices.emulator or DEFAULT_BINARY,
        monitor=DRY_RUN_MONITOR,
    )
    return DryRun(live, argv, nics)


def dry_run_argv(
    defn: DomainDef,
    caps: QEMUCaps,
    *,
    vhost_net_available: bool | None = None,
    networks: NetworkLookup | None = None,
    new_mac: MACSource = random_mac,
    binary: str | None = None,
) -> list[str]:
    """The argv :func:`dry_run` builds: what ``qctl domxml-to-argv`` prints."""
    return dry_run(
        defn,
        caps,
        vhost_net_available=vhost_net_available,
        networks=networks,
        new_mac=new_mac,
        binary=binary,
    ).argv


def _default_binary() -> str:
    return os.environ.get("QCTL_QEMU") or DEFAULT_BINARY


async def dry_run_caps(
    defn: DomainDef,
    *,
    emulator: str | None = None,
    trust_emulator: bool = False,
    cache: CapsCache | None = None,
) -> QEMUCaps:
    """The caps a dry run of ``defn`` uses, never running its ``<emulator>`` unless
    ``trust_emulator``: the probe of ``emulator`` when given; else the cached caps of the
    document's emulator; else the probe of the default binary."""
    cache = cache if cache is not None else CapsCache()
    named = defn.devices.emulator
    if emulator is not None:
        return await cache.get(emulator)
    if named and trust_emulator:
        return await cache.get(named)
    if named:
        with contextlib.suppress(ProcessError):  # no such file: the default binary decides
            cached = cache.cached(named)
            if cached is not None:
                return cached
    return await cache.get(_default_binary())


async def command_line(
    defn: DomainDef,
    *,
    emulator: str | None = None,
    trust_emulator: bool = False,
    state_root: StateRoot | Path | str | None = None,
    cache: CapsCache | None = None,
) -> list[str]:
    """What ``qctl domxml-to-argv`` prints: the argv a start of ``defn`` would run, built
    without touching the host and without running the document's emulator (see the module).

    The argv starts with ``emulator`` when given, else with the document's ``<emulator>``
    (what a start runs), else the default binary. ``type='network'`` NICs use the pools of
    ``state_root`` (read only).
    """
    caps = await dry_run_caps(defn, emulator=emulator, trust_emulator=trust_emulator, cache=cache)
    root = state_root if isinstance(state_root, StateRoot) else StateRoot(state_root)
    binary = emulator or defn.devices.emulator or _default_binary()
    return dry_run_argv(defn, caps, networks=NetworkStore(root).get, binary=binary)
