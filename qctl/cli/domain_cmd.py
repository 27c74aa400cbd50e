"""``qctl start|list|stop|dumpxml``: the life of a domain."""

from __future__ import annotations

import argparse
import asyncio
import shlex
from typing import Any

from qctl import (
    Domain,
    DomainDef,
    StateError,
    ValidationError,
    load,
    missing_images,
    not_created,
)
from qctl.cli.common import add_json, add_state_dir, print_json


def register(sub: Any) -> None:
    """Add the domain lifecycle commands."""
    start = sub.add_parser("start", help="start a domain from its XML; QEMU keeps running")
    start.add_argument("file", metavar="FILE.xml")
    add_state_dir(start)
    add_json(start)
    start.set_defaults(func=_start)

    listing = sub.add_parser("list", help="list domains; the state of exited ones is released")
    add_state_dir(listing)
    add_json(listing)
    listing.set_defaults(func=_list)

    stop = sub.add_parser("stop", help="power a domain down (then quit, then kill)")
    stop.add_argument("name")
    stop.add_argument("--force", action="store_true", help="skip the ACPI power-down")
    stop.add_argument(
        "--timeout", type=float, default=30.0, metavar="S", help="power-down grace (30 s)"
    )
    add_state_dir(stop)
    stop.set_defaults(func=_stop)

    argv = sub.add_parser(
        "domxml-to-argv", help="the QEMU command line a domain would start with (dry run)"
    )
    argv.add_argument("file", metavar="FILE.xml")
    add_state_dir(argv)
    add_json(argv)
    argv.set_defaults(func=_domxml_to_argv)

    dumpxml = sub.add_parser("dumpxml", help="a running domain's XML")
    dumpxml.add_argument("name")
    dumpxml.add_argument(
        "--live", action="store_true", help="the live XML (aliases, addresses, taps, vhost)"
    )
    add_state_dir(dumpxml)
    dumpxml.set_defaults(func=_dumpxml)


def _load_domain(path: str, *, to_start: bool = False) -> DomainDef:
    """The domain in ``path``; refused (naming the file and line) when it has a device
    qctl does not create or, ``to_start``, a disk image that does not exist."""
    defn = load(path)
    if not isinstance(defn, DomainDef):
        raise ValidationError("expected a <domain> document", source=path)
    refused = not_created(defn, source=path)
    if to_start:
        refused += missing_images(defn, source=path)
    if refused:
        raise min(refused, key=lambda problem: problem.line or 0)
    return defn


def _start(args: argparse.Namespace) -> int:
    defn = _load_domain(args.file, to_start=True)

    async def run() -> dict[str, Any]:
        async with Domain.start(defn, state_root=args.state_dir) as dom:
            return {"name": dom.name, "pid": dom.process.pid, "live_xml": dom.xml()}

    result = asyncio.run(run())
    if args.json:
        print_json(result)
    else:
        print(f"started {result['name']} (pid {result['pid']})")
    return 0


def _list(args: argparse.Namespace) -> int:
    infos = Domain.list(args.state_dir)

    async def release(name: str) -> None:
        try:
            async with Domain.connect(name, state_root=args.state_dir):
                pass
        except StateError:
            pass  # QEMU had exited: connect released what the ledger held

    for info in infos:
        if not info.running:
            asyncio.run(release(info.name))
    rows = [{"name": i.name, "pid": i.pid, "state": "running" if i.running else "gone"}
            for i in infos]
    if args.json:
        print_json(rows)
    else:
        for row in rows:
            print(f"{row['name']:<24} {row['pid'] or '-':>8}  {row['state']}")
    return 0


def _stop(args: argparse.Namespace) -> int:
    async def run() -> None:
        async with Domain.connect(args.name, state_root=args.state_dir) as dom:
            await dom.stop(force=args.force, grace=args.timeout)

    asyncio.run(run())
    print(f"stopped {args.name}")
    return 0


def _dumpxml(args: argparse.Namespace) -> int:
    async def run() -> str:
        async with Domain.connect(args.name, state_root=args.state_dir) as dom:
            return dom.xml(live=args.live)

    print(asyncio.run(run()), end="")
    return 0


def _domxml_to_argv(args: argparse.Namespace) -> int:
    defn = _load_domain(args.file)
    argv = asyncio.run(Domain.command_line(defn, state_root=args.state_dir))
    if args.json:
        print_json(argv)
    else:
        print(" \\\n".join(_argv_lines(argv)))
    return 0


def _argv_lines(argv: list[str]) -> list[str]:
    """The argv as shell lines: the binary, then each option with its value, if any."""
    lines = [shlex.quote(argv[0])]
    rest = argv[1:]
    while rest:
        arg = rest.pop(0)
        if rest and not rest[0].startswith("-"):
            arg = f"{arg} {shlex.quote(rest.pop(0))}"
        lines.append(arg)
    return lines
