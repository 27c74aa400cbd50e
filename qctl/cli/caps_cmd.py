"""``qctl caps``: what a QEMU binary (or a running QEMU) can do.

    qctl caps [--binary PATH | --connect SOCKET] [--json] [--no-cache] [--flag NAME]

Prints a readable summary (binary, version, KVM, host facts, then each flag yes/no), or the
full capabilities object with ``--json``. ``--flag NAME`` prints nothing and answers with
the exit status: 0 when the flag is present, 1 when not, for scripts. The binary defaults to
``$QCTL_QEMU`` or ``qemu-system-x86_64`` on ``PATH``; lookups go through the on-disk cache
unless ``--no-cache``. ``--connect`` asks a running QEMU through its QMP socket (never
cached). Probe failures propagate as qctl errors, which ``qctl`` prints as one line.
"""

from __future__ import annotations

import argparse
import asyncio
import os

import qctl
from qctl.cli.parser import DEFAULT_BINARY


def run(args: argparse.Namespace) -> int:
    """Look the capabilities up and print them (or answer ``--flag``)."""
    caps = asyncio.run(_lookup(args))
    if args.flag is not None:
        return 0 if caps.has(args.flag) else 1
    print(caps.to_json(indent=2) if args.json else summary(caps))
    return 0


async def _lookup(args: argparse.Namespace) -> qctl.QEMUCaps:
    if args.connect:
        return await qctl.probe(qmp_socket=args.connect)
    binary = args.binary or os.environ.get("QCTL_QEMU") or DEFAULT_BINARY
    if args.no_cache:
        return await qctl.probe(binary)
    return await qctl.CapsCache().get(binary)


def _yes(value: bool) -> str:
    return "yes" if value else "no"


def summary(caps: qctl.QEMUCaps) -> str:
    """The readable report: identity, KVM, host facts, machine types, then every flag."""
    default = caps.default_machine
    machines = f"{len(caps.machines)}" + (f" (default {default.name})" if default else "")
    lines = [
        f"binary    {caps.binary or '(running QEMU)'}",
        f"version   {caps.version_text}" + (f" ({caps.package})" if caps.package else ""),
        f"kvm       present: {_yes(caps.kvm_present)}, enabled: {_yes(caps.kvm_enabled)}",
        f"host      /dev/vhost-net: {_yes(caps.host.vhost_net)}, "
        f"/dev/net/tun: {_yes(caps.host.tun)}",
        f"machines  {machines}",
        "flags",
    ]
    width = max(len(flag.value) for flag in qctl.Capability)
    lines += [f"  {flag.value:<{width}}  {_yes(caps.has(flag))}" for flag in qctl.Capability]
    return "\n".join(lines)
