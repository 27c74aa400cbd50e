"""``qctl job|job-abort|suspend|resume|domstate|dominfo``: a domain's job and run state.

``job`` and ``dominfo`` read the books only, so they answer at once while another process
runs a long job; ``job-abort`` asks that job's owner to roll it back and waits until it has.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from qctl import Domain, JobRecord, StateError, abort_job
from qctl.cli.common import add_json, add_state_dir, print_json, run
from qctl.cli.domain_cmd import info_json


def register(sub: Any) -> None:
    """Add the job and run-state commands."""
    job = sub.add_parser(
        "job",
        help="the job running on a domain (like virsh domjobinfo)",
        description="Show the job running on a domain, in any qctl process, without waiting.",
        epilog="example: qctl job web1 --json",
    )
    job.add_argument("name", help="the domain")
    add_state_dir(job)
    add_json(job)
    job.set_defaults(func=_job)

    abort = sub.add_parser(
        "job-abort",
        help="abort the job running on a domain (it is rolled back)",
        description="Ask the owner of a domain's running job to abort it; wait for the rollback.",
        epilog="example: qctl job-abort web1",
    )
    abort.add_argument("name", help="the domain")
    add_state_dir(abort)
    add_json(abort)
    abort.set_defaults(func=_abort)

    for verb, what in (("suspend", "pause a domain's vCPUs"), ("resume", "run them again")):
        parser = sub.add_parser(verb, help=what, description=what.capitalize() + ".")
        parser.add_argument("name", help="the domain")
        add_state_dir(parser)
        parser.set_defaults(func=_suspend if verb == "suspend" else _resume)

    state = sub.add_parser(
        "domstate",
        help="a domain's run state, asked of QEMU",
        description="Print running, paused, inmigrate, postmigrate, shutdown or crashed.",
        epilog="example: qctl domstate web1",
    )
    state.add_argument("name", help="the domain")
    add_state_dir(state)
    add_json(state)
    state.set_defaults(func=_domstate)

    info = sub.add_parser(
        "dominfo",
        help="a domain's pid, run state, job and pending detaches, from its books",
        description="Summarize a domain from its status file, without waiting for a job.",
        epilog="example: qctl dominfo web1 --json",
    )
    info.add_argument("name", help="the domain")
    add_state_dir(info)
    add_json(info)
    info.set_defaults(func=_dominfo)


def _job_json(job: JobRecord | None) -> dict[str, Any] | None:
    if job is None:
        return None
    elapsed = round(time.time() - job.started, 3)
    return {**job.to_json(), "elapsed": elapsed, "owner_alive": job.owner_alive}


def _find(args: argparse.Namespace) -> Any:
    for info in Domain.list(args.state_dir):
        if info.name == args.name:
            return info
    raise StateError(f"no domain named {args.name!r} is running")


def _job(args: argparse.Namespace) -> int:
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


def _abort(args: argparse.Namespace) -> int:
    job = run(abort_job(args.name, state_root=args.state_dir))
    if args.json:
        print_json({"domain": args.name, "aborted": _job_json(job)})
    else:
        print(f"aborted {job.kind}{' of ' + job.alias if job.alias else ''} on {args.name}")
    return 0


def _suspend(args: argparse.Namespace) -> int:
    async def work() -> None:
        async with Domain.connect(args.name, state_root=args.state_dir) as dom:
            await dom.suspend()

    run(work())
    print(f"suspended {args.name}")
    return 0


def _resume(args: argparse.Namespace) -> int:
    async def work() -> None:
        async with Domain.connect(args.name, state_root=args.state_dir) as dom:
            await dom.resume()

    run(work())
    print(f"resumed {args.name}")
    return 0


def _domstate(args: argparse.Namespace) -> int:
    async def work() -> str:
        async with Domain.connect(args.name, state_root=args.state_dir) as dom:
            return dom.state.value

    state = run(work())
    if args.json:
        print_json({"domain": args.name, "state": state})
    else:
        print(state)
    return 0


def _dominfo(args: argparse.Namespace) -> int:
    info = _find(args)
    data = info_json(info)
    if args.json:
        print_json(data)
    else:
        data["job"] = info.job.describe() if info.job else None
        for key, value in data.items():
            print(f"{key.replace('_', ' ').capitalize() + ':':<16}{value if value else '-'}")
    return 0
