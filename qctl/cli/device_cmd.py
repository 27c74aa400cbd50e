"""``qctl attach-device|detach-device|events``: hot-plug on a running domain, and its events."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import sys

import qctl
from qctl.cli.common import device_json, print_json, print_json_line, warning_line
from qctl.cli.running import run

Device = qctl.InterfaceDef | qctl.HostdevDef


def attach_and_print(args: argparse.Namespace, device: str | Device, source: str) -> int:
    """Hot-plug ``device`` (XML text or a definition) into domain ``args.name`` and print it
    as the live XML shows it (its model with ``--json``)."""

    async def work() -> Device:
        async with qctl.Domain.connect(args.name, state_root=args.state_dir) as dom:
            return await dom.attach_device(device, source=source)

    live = run(work())
    if args.json:
        print_json(device_json(live))
    else:
        print(qctl.format_xml(live), end="")
    return 0


def detach_and_print(args: argparse.Namespace, target: str | Device, alias: str | None) -> int:
    """Unplug ``target`` (an alias, device XML or definition) from domain ``args.name``;
    print the result."""

    async def work() -> qctl.DetachResult:
        async with qctl.Domain.connect(args.name, state_root=args.state_dir) as dom:
            return await dom.detach_device(target, wait=args.wait)

    result = run(work())
    if args.json:
        print_json({"domain": args.name, "alias": alias, "result": result.value})
    elif result is qctl.DetachResult.PENDING:
        print("detach pending: QEMU has not reported the removal yet; it completes when it does")
    else:
        print("detached")
    return 0


def _device_file(path: str) -> Device:
    """The device in ``path`` (read and parsed before any domain is touched); its warnings
    (what libvirt accepts but qctl doubts) on stderr."""
    data = qctl.read_document(path)
    for warning in qctl.review(data, source=path)[1]:
        print(warning_line(warning), file=sys.stderr)
    return qctl.parse_device(data, source=path)


def attach(args: argparse.Namespace) -> int:
    return attach_and_print(args, _device_file(args.file), args.file)


def detach(args: argparse.Namespace) -> int:
    target: str | Device = args.alias if args.alias else _device_file(args.file)
    return detach_and_print(args, target, args.alias)


def events(args: argparse.Namespace) -> int:
    async def work() -> None:
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
        run(work())
    return 0
