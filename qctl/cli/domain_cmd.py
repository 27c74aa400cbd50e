"""``qctl start|list|stop|dumpxml|domxml-to-argv``: the life of a domain."""

from __future__ import annotations

import argparse
import shlex
import sys
from typing import Any

import qctl
from qctl.cli.common import existing_state_root, print_json, state_root
from qctl.cli.running import run


def _load_domain(path: str, *, to_start: bool = False) -> qctl.DomainDef:
    """The domain in ``path``; refused (naming the file and line) when it has a device
    qctl does not create or, ``to_start``, a disk image that does not exist."""
    defn = qctl.load(path)
    if not isinstance(defn, qctl.DomainDef):
        raise qctl.ValidationError("expected a <domain> document", source=path)
    refused = qctl.not_created(defn, source=path)
    if to_start:
        refused += qctl.missing_images(defn, source=path)
    if refused:
        raise min(refused, key=lambda problem: problem.line or 0)
    return defn


def info_json(info: qctl.DomainInfo) -> dict[str, Any]:
    """A domain as ``list --json`` and ``dominfo --json`` show it."""
    state = "damaged" if info.error else info.state.value if info.running else "gone"
    return {
        "name": info.name,
        "pid": info.pid,
        "state": state,
        "job": info.job.to_json() if info.job else None,
        "detach_pending": list(info.pending),
        "error": info.error,
    }


def start(args: argparse.Namespace) -> int:
    defn = _load_domain(args.file, to_start=True)

    async def work() -> dict[str, Any]:
        paths = qctl.HostPaths(confine=False) if args.no_confine else qctl.HostPaths()
        dom = await qctl.Domain.start(defn, state_root=args.state_dir, host_paths=paths)
        try:  # QEMU outlives qctl; the row is a line of `list`, the same JSON
            return info_json(qctl.DomainInfo(dom.name, dom.process.pid, True, dom.state))
        finally:
            await dom.aclose()

    row = run(work())
    if args.json:
        print_json(row)
    else:
        print(f"started {row['name']} (pid {row['pid']})")
    return 0


def list_(args: argparse.Namespace) -> int:
    root = existing_state_root(args)
    infos = qctl.list_domains(root)

    async def release(name: str) -> None:
        try:
            async with qctl.Domain.connect(name, state_root=root):
                pass
        except qctl.StateError:
            pass  # QEMU had exited (or its start was cut short): connect released it

    for info in infos:
        if not info.running and (info.error is None or "cut short" in info.error):
            run(release(info.name))
    rows = [info_json(i) for i in infos]
    if args.json:
        print_json(rows)
        return 0
    print(f"{'NAME':<24} {'PID':>8}  {'STATE':<12} JOB")
    for info, row in zip(infos, rows, strict=True):
        if info.error:  # drop it with `stop --force` once no QEMU runs for it
            print(f"{info.name:<24} {info.pid or '-':>8}  damaged: {info.error}")
            continue
        job = info.job.describe() if info.job else "-"
        if info.pending:
            job += f" (pending: {', '.join(info.pending)})"  # attaching, detaching or uncertain
        print(f"{info.name:<24} {info.pid or '-':>8}  {row['state']:<12} {job}")
    return 0


def stop(args: argparse.Namespace) -> int:
    def say(line: str) -> None:
        print(f"qctl: {args.name}: {line}", file=sys.stderr, flush=True)

    async def work() -> None:
        async with qctl.Domain.connect(args.name, state_root=state_root(args)) as dom:
            await dom.stop(force=args.force, grace=args.timeout, say=say)

    damaged = [i for i in qctl.list_domains(state_root(args)) if i.name == args.name and i.error]
    if damaged and args.force and "cut short" not in (damaged[0].error or ""):
        qctl.discard_damaged(args.name, args.state_dir)
        line = f"discarded the damaged state of {args.name} ({damaged[0].error})"
        result = "discarded"
    else:
        run(work())
        result, line = "stopped", f"stopped {args.name}"
    if args.json:
        print_json({"domain": args.name, "result": result})
    else:
        print(line)
    return 0


def dumpxml(args: argparse.Namespace) -> int:
    async def work() -> str:
        async with qctl.Domain.connect(args.name, state_root=state_root(args)) as dom:
            if args.migratable:
                return dom.migratable_xml()
            return dom.xml(live=not args.inactive)

    xml = run(work())
    if args.json:
        print_json(qctl.def_to_dict(qctl.parse_domain(xml, source=args.name, live=True)))
    else:
        print(xml, end="")
    return 0


def domxml_to_argv(args: argparse.Namespace) -> int:
    defn = _load_domain(args.file)
    argv = run(
        qctl.command_line(
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
