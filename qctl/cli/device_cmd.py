"""``qctl attach-device|detach-device|events``: hot-plug on a running domain."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import sys
from typing import Any

from qctl import (
    DetachResult,
    Domain,
    HostdevDef,
    InterfaceDef,
    format_xml,
    parse_device,
    read_document,
    review,
)
from qctl.cli.common import add_json, add_state_dir, print_json, run, warning_line


def register(sub: Any) -> None:
    """Add the hot-plug commands."""
    attach = sub.add_parser("attach-device", help="hot-plug an <interface> from a file")
    attach.add_argument("name")
    attach.add_argument("file", metavar="FILE.xml")
    add_state_dir(attach)
    add_json(attach)
    attach.set_defaults(func=_attach)

    detach = sub.add_parser("detach-device", help="unplug a device (by file or --alias)")
    detach.add_argument("name")
    target = detach.add_mutually_exclusive_group(required=True)
    target.add_argument("file", metavar="FILE.xml", nargs="?")
    target.add_argument("--alias", metavar="A", help="the device's alias (net0, ua-x, …)")
    detach.add_argument(
        "--wait",
        type=float,
        default=5.0,
        metavar="S",
        help="seconds to wait for QEMU to report the removal (5); then it is 'pending'",
    )
    add_state_dir(detach)
    add_json(detach)
    detach.set_defaults(func=_detach)

    events = sub.add_parser("events", help="print a domain's events as they come")
    events.add_argument("name")
    events.add_argument("--count", type=int, default=0, metavar="N", help="stop after N events")
    events.add_argument(
        "--timeout", type=float, default=0.0, metavar="S", help="stop after S seconds (0: never)"
    )
    add_state_dir(events)
    add_json(events)
    events.set_defaults(func=_events)


def _attach(args: argparse.Namespace) -> int:
    data = read_document(args.file)
    for warning in review(data, source=args.file)[1]:
        print(warning_line(warning), file=sys.stderr)
    device = parse_device(data, source=args.file)

    async def work() -> str:
        async with Domain.connect(args.name, state_root=args.state_dir) as dom:
            live = await dom.attach_device(device, source=args.file)
            return format_xml(live)

    live_xml = run(work())
    if args.json:
        print_json({"domain": args.name, "device_xml": live_xml})
    else:
        print(live_xml, end="")
    return 0


def _detach(args: argparse.Namespace) -> int:
    target: str | InterfaceDef | HostdevDef = (
        args.alias if args.alias else parse_device(read_document(args.file), source=args.file)
    )

    async def work() -> DetachResult:
        async with Domain.connect(args.name, state_root=args.state_dir) as dom:
            return await dom.detach_device(target, wait=args.wait)

    result = run(work())
    if args.json:
        print_json({"domain": args.name, "result": result.value})
    elif result is DetachResult.PENDING:
        print("detach pending: QEMU has not reported the removal yet; it completes when it does")
    else:
        print("detached")
    return 0


def _events(args: argparse.Namespace) -> int:
    async def work() -> None:
        async with Domain.connect(args.name, state_root=args.state_dir) as dom:
            seen = 0
            with dom.events() as stream:
                print(f"listening for events of {dom.name}", file=sys.stderr, flush=True)
                async with asyncio.timeout(args.timeout or None):
                    async for event in stream:
                        data = {"event": type(event).__name__, **dataclasses.asdict(event)}
                        if args.json:
                            print_json(data)
                        else:
                            fields = " ".join(f"{k}={v}" for k, v in data.items() if k != "event")
                            print(f"{data['event']} {fields}")
                        sys.stdout.flush()
                        seen += 1
                        if args.count and seen >= args.count:
                            return

    with contextlib.suppress(TimeoutError):  # --timeout ran out: a normal end
        run(work())
    return 0
