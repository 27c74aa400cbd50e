"""``qctl start|list|stop|dumpxml|domxml-to-argv``: the life of a domain."""

from __future__ import annotations

import argparse
import asyncio
import shlex
from typing import Any

import qctl
from qctl.cli.common import existing_state_root, print_json, state_root


def _load_domain(path: str) -> qctl.DomainDef:
    defn = qctl.load(path)
    if not isinstance(defn, qctl.DomainDef):
        raise qctl.ValidationError("expected a <domain> document", source=path)
    return defn


def _row(name: str, pid: int | None, running: bool) -> dict[str, Any]:
    """A domain as a line of ``qctl list`` (and the JSON of ``start``)."""
    return {"name": name, "pid": pid, "state": "running" if running else "gone"}


def start(args: argparse.Namespace) -> int:
    defn = _load_domain(args.file)

    async def run() -> dict[str, Any]:
        async with qctl.Domain.start(defn, state_root=args.state_dir) as dom:
            return _row(dom.name, dom.process.pid, True)

    row = asyncio.run(run())
    if args.json:
        print_json(row)
    else:
        print(f"started {row['name']} (pid {row['pid']})")
    return 0


def list_(args: argparse.Namespace) -> int:
    root = existing_state_root(args)
    infos = qctl.Domain.list(root)

    async def release(name: str) -> None:
        try:
            async with qctl.Domain.connect(name, state_root=root):
                pass
        except qctl.StateError:
            pass  # QEMU had exited: connect released what the ledger held

    for info in infos:
        if not info.running:
            asyncio.run(release(info.name))
    rows = [_row(i.name, i.pid, i.running) for i in infos]
    if args.json:
        print_json(rows)
    else:
        for row in rows:
            print(f"{row['name']:<24} {row['pid'] or '-':>8}  {row['state']}")
    return 0


def stop(args: argparse.Namespace) -> int:
    async def run() -> None:
        async with qctl.Domain.connect(args.name, state_root=state_root(args)) as dom:
            await dom.stop(force=args.force, grace=args.timeout)

    asyncio.run(run())
    if args.json:
        print_json({"domain": args.name, "result": "stopped"})
    else:
        print(f"stopped {args.name}")
    return 0


def dumpxml(args: argparse.Namespace) -> int:
    async def run() -> str:
        async with qctl.Domain.connect(args.name, state_root=state_root(args)) as dom:
            return dom.xml(live=not args.inactive)

    xml = asyncio.run(run())
    if args.json:
        print_json(qctl.def_to_dict(qctl.parse_domain(xml, source=args.name, live=True)))
    else:
        print(xml, end="")
    return 0


def domxml_to_argv(args: argparse.Namespace) -> int:
    defn = _load_domain(args.file)
    argv = asyncio.run(qctl.Domain.command_line(defn, state_root=args.state_dir))
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
