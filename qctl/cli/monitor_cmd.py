"""``qctl qemu-monitor-command``: the raw QMP (or HMP) escape hatch, as in virsh."""

from __future__ import annotations

import argparse
import asyncio
import json

import qctl
from qctl.cli.common import print_json, state_root


def run(args: argparse.Namespace) -> int:
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
