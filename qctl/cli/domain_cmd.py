"""``qctl start|list|stop|dumpxml|domxml-to-argv``: the life of a domain."""

from __future__ import annotations

import argparse
import asyncio
import shlex
from typing import Any

import qctl
from qctl.cli.common import (
    Subparsers,
    add_verb,
    existing_state_root,
    print_json,
    state_root,
)
from qctl.cli.completion_cmd import complete_domains

DOMAIN_HELP = "the domain's name (as in its <name>)"


def register(sub: Subparsers) -> None:
    """Add the domain lifecycle commands."""
    start = add_verb(
        sub,
        "start",
        _start,
        summary="start a domain from its XML; QEMU keeps running",
        description="Start the domain FILE.xml defines: probe QEMU (cached), prepare the "
        "host side (taps, vhost-net, VFIO), spawn QEMU and record its state. QEMU keeps "
        "running after qctl exits; every other command finds it by name.",
        examples=["qctl start examples/domain-basic.xml", "qctl start vm.xml --json"],
    )
    start.add_argument("file", metavar="FILE.xml", help="the <domain> document")

    add_verb(
        sub,
        "list",
        _list,
        summary="list domains; the state of exited ones is released",
        description="List the domains of the state root with their QEMU pid. A domain whose "
        "QEMU exited is shown once as 'gone' and what it held (taps, pool devices) released.",
        examples=["qctl list", "qctl --state-dir /tmp/qctl list --json | jq -r '.[].name'"],
    )

    stop = add_verb(
        sub,
        "stop",
        _stop,
        summary="power a domain down (then quit, then kill)",
        description="Press the ACPI power button and wait up to --timeout seconds; then "
        "ask QEMU to quit, then kill it. What the domain held is released.",
        examples=["qctl stop vm1", "qctl stop vm1 --force"],
    )
    complete_domains(stop.add_argument("name", metavar="NAME", help=DOMAIN_HELP))
    stop.add_argument("--force", action="store_true", help="skip the ACPI power-down")
    stop.add_argument(
        "--timeout", type=float, default=30.0, metavar="S", help="power-down grace (30 s)"
    )

    argv = add_verb(
        sub,
        "domxml-to-argv",
        _domxml_to_argv,
        summary="the QEMU command line a domain would start with (dry run)",
        description="Print the command line `qctl start FILE.xml` would run, without "
        "touching the host: fds are symbolic, taps not created. --json prints the argv list.",
        examples=[
            "qctl domxml-to-argv examples/domain-basic.xml",
            "qctl domxml-to-argv vm.xml --json | jq -r '.[]'",
        ],
    )
    argv.add_argument("file", metavar="FILE.xml", help="the <domain> document")

    dumpxml = add_verb(
        sub,
        "dumpxml",
        _dumpxml,
        summary="a running domain's XML (live; --inactive: as defined)",
        description="Print the live XML of a running domain, as virsh does: the devices "
        "hot-plugged since the start, with the aliases, PCI addresses, taps and vhost choice "
        "qctl filled in. --inactive prints the definition as it was given to `qctl start`. "
        "--json prints the model instead of XML.",
        examples=["qctl dumpxml vm1", "qctl dumpxml vm1 --inactive", "qctl dumpxml vm1 --json"],
    )
    complete_domains(dumpxml.add_argument("name", metavar="NAME", help=DOMAIN_HELP))
    dumpxml.add_argument(
        "--inactive", action="store_true", help="the definition as given, not the live XML"
    )


def _load_domain(path: str) -> qctl.DomainDef:
    defn = qctl.load(path)
    if not isinstance(defn, qctl.DomainDef):
        raise qctl.ValidationError("expected a <domain> document", source=path)
    return defn


def _row(name: str, pid: int | None, running: bool) -> dict[str, Any]:
    """A domain as a line of ``qctl list`` (and the JSON of ``start``)."""
    return {"name": name, "pid": pid, "state": "running" if running else "gone"}


def _start(args: argparse.Namespace) -> int:
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


def _list(args: argparse.Namespace) -> int:
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


def _stop(args: argparse.Namespace) -> int:
    async def run() -> None:
        async with qctl.Domain.connect(args.name, state_root=state_root(args)) as dom:
            await dom.stop(force=args.force, grace=args.timeout)

    asyncio.run(run())
    if args.json:
        print_json({"domain": args.name, "result": "stopped"})
    else:
        print(f"stopped {args.name}")
    return 0


def _dumpxml(args: argparse.Namespace) -> int:
    async def run() -> str:
        async with qctl.Domain.connect(args.name, state_root=state_root(args)) as dom:
            return dom.xml(live=not args.inactive)

    xml = asyncio.run(run())
    if args.json:
        print_json(qctl.def_to_dict(qctl.parse_domain(xml, source=args.name, live=True)))
    else:
        print(xml, end="")
    return 0


def _domxml_to_argv(args: argparse.Namespace) -> int:
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
