"""``qctl start|list|stop|dumpxml``: the life of a domain."""

from __future__ import annotations

import argparse
import shlex
import sys
from typing import Any

from qctl import (
    Domain,
    DomainDef,
    DomainInfo,
    HostPaths,
    StateError,
    ValidationError,
    command_line,
    discard_damaged,
    load,
    missing_images,
    not_created,
)
from qctl.cli.common import add_json, add_state_dir, print_json, run


def register(sub: Any) -> None:
    """Add the domain lifecycle commands."""
    start = sub.add_parser("start", help="start a domain from its XML; QEMU keeps running")
    start.add_argument("file", metavar="FILE.xml")
    start.add_argument(
        "--no-confine",
        action="store_true",
        help="run QEMU as qctl's user without its sandbox (as root QEMU runs as "
        "$QCTL_QEMU_USER or qctl-qemu, sandboxed, by default)",
    )
    add_state_dir(start)
    add_json(start)
    start.set_defaults(func=_start)

    listing = sub.add_parser("list", help="list domains; the state of exited ones is released")
    add_state_dir(listing)
    add_json(listing)
    listing.set_defaults(func=_list)

    stop = sub.add_parser("stop", help="power a domain down (then quit, then kill)")
    stop.add_argument("name")
    stop.add_argument(
        "--force",
        action="store_true",
        help="skip the ACPI power-down; drop a damaged state once no QEMU runs for it",
    )
    stop.add_argument(
        "--timeout", type=float, default=30.0, metavar="S", help="power-down grace (30 s)"
    )
    add_state_dir(stop)
    stop.set_defaults(func=_stop)

    argv = sub.add_parser(
        "domxml-to-argv", help="the QEMU command line a domain would start with (dry run)"
    )
    argv.add_argument("file", metavar="FILE.xml")
    argv.add_argument(
        "--emulator",
        metavar="PATH",
        help="probe this QEMU for what it can do, and start the argv with it (default: the "
        "cached capabilities of the document's <emulator>, else $QCTL_QEMU or "
        "qemu-system-x86_64)",
    )
    argv.add_argument(
        "--probe-document-emulator",
        action="store_true",
        help="run the document's <emulator> to probe it (never done otherwise)",
    )
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

    async def work() -> dict[str, Any]:
        paths = HostPaths(confine=False) if args.no_confine else HostPaths()
        dom = await Domain.start(defn, state_root=args.state_dir, host_paths=paths)
        try:  # QEMU outlives qctl
            return {"name": dom.name, "pid": dom.process.pid, "live_xml": dom.xml()}
        finally:
            await dom.aclose()

    result = run(work())
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
        if not info.running and info.error is None:
            run(release(info.name))
    rows = [info_json(i) for i in infos]
    if args.json:
        print_json(rows)
    else:
        print(f"{'NAME':<24} {'PID':>8}  {'STATE':<12} JOB")
        for info, row in zip(infos, rows, strict=True):
            job = info.job.describe() if info.job else "-"
            if info.pending:
                job += f" (detach pending: {', '.join(info.pending)})"
            if info.error:  # drop it with `stop --force` once no QEMU runs for it
                print(f"{info.name:<24} {info.pid or '-':>8}  damaged: {info.error}")
            else:
                print(f"{info.name:<24} {info.pid or '-':>8}  {row['state']:<12} {job}")
    return 0


def info_json(info: DomainInfo) -> dict[str, Any]:
    """A domain as ``list --json`` and ``dominfo --json`` show it."""
    return {
        "name": info.name,
        "pid": info.pid,
        "state": "damaged" if info.error else info.state.value if info.running else "gone",
        "job": info.job.to_json() if info.job else None,
        "detach_pending": list(info.pending),
        "error": info.error,
    }


def _stop(args: argparse.Namespace) -> int:
    def say(line: str) -> None:
        print(f"qctl: {args.name}: {line}", file=sys.stderr, flush=True)

    async def stop() -> None:
        async with Domain.connect(args.name, state_root=args.state_dir) as dom:
            await dom.stop(force=args.force, grace=args.timeout, say=say)

    damaged = [i for i in Domain.list(args.state_dir) if i.name == args.name and i.error]
    if damaged and args.force:
        discard_damaged(args.name, args.state_dir)
        print(f"discarded the damaged state of {args.name} ({damaged[0].error})")
        return 0
    run(stop())
    print(f"stopped {args.name}")
    return 0


def _dumpxml(args: argparse.Namespace) -> int:
    async def work() -> str:
        async with Domain.connect(args.name, state_root=args.state_dir) as dom:
            return dom.xml(live=args.live)

    print(run(work()), end="")
    return 0


def _domxml_to_argv(args: argparse.Namespace) -> int:
    defn = _load_domain(args.file)
    argv = run(
        command_line(
            defn,
            emulator=args.emulator,
            trust_emulator=args.probe_document_emulator,
            state_root=args.state_dir,
        )
    )
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
