"""``qctl job|job-abort|suspend|resume|domstate|dominfo``: a domain's job and run state.

``job`` and ``dominfo`` read the books only, so they answer at once while another process
runs a long job; ``job-abort`` asks that job's owner to roll it back and waits until it has.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Coroutine
from typing import Any

import qctl
from qctl.cli.common import existing_state_root, print_json
from qctl.cli.domain_cmd import info_json
from qctl.cli.running import run


def _job_json(job: qctl.JobRecord | None) -> dict[str, Any] | None:
    if job is None:
        return None
    elapsed = round(time.time() - job.started, 3)
    return {**job.to_json(), "elapsed": elapsed, "owner_alive": job.owner_alive}


def _find(args: argparse.Namespace) -> qctl.DomainInfo:
    for info in qctl.list_domains(existing_state_root(args)):
        if info.name == args.name:
            return info
    raise qctl.StateError(f"no domain named {args.name!r} is running")


def job(args: argparse.Namespace) -> int:
    info = _find(args)
    if args.json:
        print_json({"domain": args.name, "job": _job_json(info.job)})
    elif info.job is None:
        print("no job")
    else:
        job = info.job
        print(f"{'Job type:':<16}{job.kind}")
        print(f"{'Device:':<16}{job.alias or '-'}")
        print(f"{'Owner:':<16}pid {job.owner.pid}{'' if job.owner_alive else ' (died)'}")
        print(f"{'Time elapsed:':<16}{time.time() - job.started:.1f} s")
        print(f"{'Progress:':<16}{job.progress or '-'}")
    return 0


def job_abort(args: argparse.Namespace) -> int:
    job = run(qctl.abort_job(args.name, state_root=args.state_dir))
    if args.json:
        print_json({"domain": args.name, "aborted": _job_json(job)})
    else:
        print(f"aborted {job.kind}{' of ' + job.alias if job.alias else ''} on {args.name}")
    return 0


def suspend(args: argparse.Namespace) -> int:
    return _power(args, "suspended", lambda dom: dom.suspend())


def resume(args: argparse.Namespace) -> int:
    return _power(args, "resumed", lambda dom: dom.resume())


def _power(
    args: argparse.Namespace,
    result: str,
    action: Callable[[qctl.Domain], Coroutine[Any, Any, None]],
) -> int:
    async def work() -> None:
        async with qctl.Domain.connect(args.name, state_root=args.state_dir) as dom:
            await action(dom)

    run(work())
    if args.json:
        print_json({"domain": args.name, "result": result})
    else:
        print(f"{result} {args.name}")
    return 0


def domstate(args: argparse.Namespace) -> int:
    async def work() -> str:
        async with qctl.Domain.connect(args.name, state_root=args.state_dir) as dom:
            return dom.state.value

    state = run(work())
    if args.json:
        print_json({"domain": args.name, "state": state})
    else:
        print(state)
    return 0


def dominfo(args: argparse.Namespace) -> int:
    info = _find(args)
    data = info_json(info)
    if args.json:
        print_json(data)
    else:
        data["job"] = info.job.describe() if info.job else None
        for key, value in data.items():
            print(f"{key.replace('_', ' ').capitalize() + ':':<16}{value if value else '-'}")
    return 0
