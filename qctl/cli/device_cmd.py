"""``qctl attach-device|detach-device|events``: hot-plug on a running domain, and its events."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import sys
from pathlib import Path

import qctl
from qctl.cli.common import Subparsers, add_verb, device_json, print_json, print_json_line
from qctl.cli.completion_cmd import complete_aliases, complete_domains
from qctl.cli.domain_cmd import DOMAIN_HELP

WAIT_HELP = "seconds to wait for QEMU to report the removal (5); then it is 'pending'"


def register(sub: Subparsers) -> None:
    """Add the hot-plug commands."""
    attach = add_verb(
        sub,
        "attach-device",
        _attach,
        summary="hot-plug an <interface> or <hostdev> from a file",
        description="Hot-plug the device FILE.xml describes into the running domain NAME, "
        "as one transaction: on failure everything done is undone. Prints the device as the "
        "live XML shows it (alias, PCI address, tap); --json prints its model.",
        examples=[
            "qctl attach-device vm1 nic.xml",
            "qctl attach-device vm1 nic.xml --json | jq -r .alias",
        ],
    )
    complete_domains(attach.add_argument("name", metavar="NAME", help=DOMAIN_HELP))
    attach.add_argument("file", metavar="FILE.xml", help="an <interface> or <hostdev> document")

    detach = add_verb(
        sub,
        "detach-device",
        _detach,
        summary="unplug a device (by file or --alias)",
        description="Ask the guest to release a device and wait for QEMU's removal event. "
        "The device is named by a file (matched by alias, else MAC or host address) or by "
        "--alias. When the event has not come after --wait seconds the detach is 'pending': "
        "it completes whenever the guest lets go.",
        examples=[
            "qctl detach-device vm1 nic.xml",
            "qctl detach-device vm1 --alias ua-nic1 --wait 30 --json",
        ],
    )
    complete_domains(detach.add_argument("name", metavar="NAME", help=DOMAIN_HELP))
    target = detach.add_mutually_exclusive_group(required=True)
    target.add_argument(
        "file", metavar="FILE.xml", nargs="?", help="the device's document (or use --alias)"
    )
    complete_aliases(
        target.add_argument("--alias", metavar="A", help="the device's alias (net0, ua-x, …)")
    )
    detach.add_argument("--wait", type=float, default=5.0, metavar="S", help=WAIT_HELP)

    events = add_verb(
        sub,
        "events",
        _events,
        summary="print a domain's events as they come",
        description="Print the events of the running domain NAME as they come: devices "
        "added and removed, unplugs the guest refused, NIC filter changes, shutdown. "
        "--json prints JSON Lines: one object per event and line.",
        examples=[
            "qctl events vm1 --count 1 --timeout 30",
            "qctl events vm1 --json | jq -c 'select(.event == \"DeviceRemoved\")'",
        ],
    )
    complete_domains(events.add_argument("name", metavar="NAME", help=DOMAIN_HELP))
    events.add_argument("--count", type=int, default=0, metavar="N", help="stop after N events")
    events.add_argument(
        "--timeout", type=float, default=0.0, metavar="S", help="stop after S seconds (0: never)"
    )


def attach_and_print(args: argparse.Namespace, xml: str, source: str) -> int:
    """Hot-plug the device ``xml`` into domain ``args.name`` and print it as the live XML
    shows it (its model with ``--json``)."""

    async def run() -> qctl.InterfaceDef | qctl.HostdevDef:
        async with qctl.Domain.connect(args.name, state_root=args.state_dir) as dom:
            return await dom.attach_device(xml, source=source)

    live = asyncio.run(run())
    if args.json:
        print_json(device_json(live))
    else:
        print(qctl.format_xml(live), end="")
    return 0


def detach_and_print(args: argparse.Namespace, target: str, alias: str | None) -> int:
    """Unplug ``target`` (an alias or device XML) from domain ``args.name``; print the result."""

    async def run() -> qctl.DetachResult:
        async with qctl.Domain.connect(args.name, state_root=args.state_dir) as dom:
            return await dom.detach_device(target, wait=args.wait)

    result = asyncio.run(run())
    if args.json:
        print_json({"domain": args.name, "alias": alias, "result": result.value})
    elif result is qctl.DetachResult.PENDING:
        print("detach pending: QEMU has not reported the removal yet; it completes when it does")
    else:
        print("detached")
    return 0


def _attach(args: argparse.Namespace) -> int:
    return attach_and_print(args, Path(args.file).read_text(), args.file)


def _detach(args: argparse.Namespace) -> int:
    target: str = args.alias if args.alias else Path(args.file).read_text()
    return detach_and_print(args, target, args.alias)


def _events(args: argparse.Namespace) -> int:
    async def run() -> None:
        async with qctl.Domain.connect(args.name, state_root=args.state_dir) as dom:
            seen = 0
            with dom.events() as stream:
                print(f"listening for events of {dom.name}", file=sys.stderr, flush=True)
                async with asyncio.timeout(args.timeout or None):
                    async for event in stream:
                        data = {"event": type(event).__name__, **dataclasses.asdict(event)}
                        if args.json:
                            print_json_line(data)
                        else:
                            fields = " ".join(f"{k}={v}" for k, v in data.items() if k != "event")
                            print(f"{data['event']} {fields}", flush=True)
                        seen += 1
                        if args.count and seen >= args.count:
                            return

    with contextlib.suppress(TimeoutError):  # --timeout ran out: a normal end
        asyncio.run(run())
    return 0
