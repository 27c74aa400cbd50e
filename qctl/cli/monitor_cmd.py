"""``qctl qemu-monitor-command``: the raw QMP (or HMP) escape hatch, as in virsh."""

from __future__ import annotations

import argparse
import asyncio
import json

import qctl
from qctl.cli.common import Subparsers, add_verb, print_json, state_root
from qctl.cli.completion_cmd import complete_domains
from qctl.cli.domain_cmd import DOMAIN_HELP


def register(sub: Subparsers) -> None:
    """Add the ``qemu-monitor-command`` command."""
    monitor = add_verb(
        sub,
        "qemu-monitor-command",
        _run,
        summary="send a raw QMP command (or --hmp line) to a running domain",
        description="Send COMMAND to the QEMU of the running domain NAME and print the "
        "reply: QMP JSON such as '{\"execute\": \"query-status\"}' (or a bare command name), "
        'printed as {"return": …}; or with --hmp a human monitor line, printed as text. '
        "qctl's ledger does not know what such a command changes: the next connect "
        "reconciles devices added or removed this way.",
        examples=[
            "qctl qemu-monitor-command vm1 '{\"execute\": \"query-status\"}'",
            "qctl qemu-monitor-command vm1 --pretty query-pci",
            "qctl qemu-monitor-command vm1 --hmp 'info network'",
        ],
    )
    complete_domains(monitor.add_argument("name", metavar="NAME", help=DOMAIN_HELP))
    monitor.add_argument(
        "command", nargs="+", metavar="COMMAND", help="QMP JSON, or HMP with --hmp (words joined)"
    )
    monitor.add_argument("--hmp", action="store_true", help="COMMAND is a human monitor line")
    monitor.add_argument("--pretty", action="store_true", help="indent the QMP reply")


def _run(args: argparse.Namespace) -> int:
    text = " ".join(args.command)
    # Checked before connecting: a malformed command never reaches QEMU.
    command, arguments = ("", {}) if args.hmp else qctl.parse_monitor_command(text)

    async def run() -> object:
        async with qctl.Domain.connect(args.name, state_root=state_root(args)) as dom:
            if args.hmp:
                return await qctl.human_monitor_command(dom, text)
            return await qctl.monitor_command(dom, command, arguments)

    reply = asyncio.run(run())
    if args.hmp and not args.json:
        print(reply, end="" if str(reply).endswith("\n") else "\n")
    elif args.pretty:
        print_json({"return": reply})
    else:
        print(json.dumps({"return": reply}))
    return 0
