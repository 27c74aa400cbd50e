"""``qctl migrate|migrate-incoming|migrate-cancel``: live migration between hosts.

``migrate`` shows its progress as a bar on a terminal (drawn by tqdm, imported only then),
or one JSON object per look with ``--json`` (JSON Lines, ending with the outcome).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any

import qctl
from qctl.cli.common import print_json, print_json_line, state_root
from qctl.cli.running import run

_MIB = 1024 * 1024


class _Bar:
    """A tqdm bar of the RAM moved, its text the migration's status and pass."""

    def __init__(self) -> None:
        from tqdm import tqdm  # only a terminal pays for it

        self._bar = tqdm(total=0, unit="MiB", desc="migrating", file=sys.stderr, leave=True)

    def update(self, seen: qctl.MigrationProgress) -> None:
        self._bar.total = max(1, seen.total // _MIB)
        self._bar.n = min(self._bar.total, seen.transferred // _MIB)
        self._bar.set_description(f"{seen.status} (pass {seen.passes})")
        self._bar.refresh()

    def close(self) -> None:
        self._bar.close()


def migrate(args: argparse.Namespace) -> int:
    bar = _Bar() if sys.stderr.isatty() and not args.json else None

    def progress(seen: qctl.MigrationProgress) -> None:
        if args.json:
            print_json_line({"domain": args.name, "progress": dataclasses.asdict(seen)})
        elif bar is not None:
            bar.update(seen)

    def say(line: str) -> None:
        print(f"qctl: {args.name}: warning: {line}", file=sys.stderr, flush=True)

    async def work() -> qctl.MigrationOutcome:
        async with qctl.Domain.connect(args.name, state_root=state_root(args)) as dom:
            return await dom.migrate(
                args.uri,
                timeout=args.timeout or None,
                bandwidth=int(args.bandwidth * _MIB) if args.bandwidth else None,
                downtime=args.downtime,
                progress=progress,
                say=say,
            )

    try:
        outcome = run(work())
    finally:
        if bar is not None:
            bar.close()
    result: dict[str, Any] = {"domain": args.name, "result": "migrated"}
    result.update(dataclasses.asdict(outcome))
    if args.json:
        print_json_line(result)
    else:
        print(
            f"migrated {args.name} to {args.uri} in {outcome.wall_time:.2f} s "
            f"(downtime {outcome.downtime_ms} ms, {outcome.passes} passes)"
        )
    return 0


def migrate_incoming(args: argparse.Namespace) -> int:
    defn = qctl.load(args.file, live=True)  # the source's migratable XML keeps its aliases
    if not isinstance(defn, qctl.DomainDef):
        raise qctl.ValidationError("expected a <domain> document", source=args.file)

    def ready() -> None:
        print(f"listening on {args.listen} for {defn.name}", file=sys.stderr, flush=True)

    async def work() -> dict[str, Any]:
        dom = await qctl.Domain.incoming(
            defn, args.listen, state_root=args.state_dir, timeout=args.timeout or None, ready=ready
        )
        try:  # the guest runs here now, and QEMU outlives qctl
            return {"domain": dom.name, "pid": dom.process.pid, "result": "received"}
        finally:
            await dom.aclose()

    result = run(work())
    if args.json:
        print_json(result)
    else:
        print(f"received {result['domain']} (pid {result['pid']})")
    return 0


def migrate_cancel(args: argparse.Namespace) -> int:
    job = run(qctl.abort_job(args.name, state_root=args.state_dir))
    if args.json:
        print_json({"domain": args.name, "result": "cancelled", "job": job.kind})
    else:
        print(f"cancelled the {job.kind} job of {args.name}; it keeps running here")
    return 0
