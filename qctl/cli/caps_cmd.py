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
from qctl.cli.common import Subparsers, add_verb

DEFAULT_BINARY = "qemu-system-x86_64"


def _capability(text: str) -> qctl.Capability:
    """A flag name, case-insensitive; a usage error listing the valid names otherwise."""
    try:
        return qctl.Capability(text.lower())
    except ValueError:
        names = ", ".join(flag.value for flag in qctl.Capability)
        raise argparse.ArgumentTypeError(f"unknown flag {text!r}; valid flags: {names}") from None


def register(sub: Subparsers) -> None:
    """Add the ``caps`` command."""
    parser = add_verb(
        sub,
        "caps",
        run,
        summary="show what a QEMU binary can do",
        description="Probe a QEMU binary (cached) or a running QEMU, and show its "
        "capabilities: version, KVM, host facts, machine types and every flag qctl uses. "
        "--json prints the whole capabilities object.",
        examples=[
            "qctl caps",
            "qctl caps --binary /usr/bin/qemu-system-x86_64 --json | jq .version",
            "qctl caps --flag virtio_net_failover && echo supported",
        ],
    )
    target = parser.add_mutually_exclusive_group()
    target.add_argument(
        "--binary",
        metavar="PATH",
        help=f"QEMU binary (default: $QCTL_QEMU, or {DEFAULT_BINARY} on PATH)",
    )
    target.add_argument("--connect", metavar="SOCKET", help="QMP socket of a running QEMU")
    parser.add_argument("--no-cache", action="store_true", help="probe afresh, skip the cache")
    parser.add_argument(
        "--flag",
        type=_capability,
        metavar="NAME",
        help="exit 0 if the flag is present, 1 if not (prints nothing)",
    )


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
