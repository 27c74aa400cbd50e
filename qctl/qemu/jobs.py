"""What any process can learn of the domains of a state root, and do with their jobs,
from the books alone, never waiting for a job: list them, see the job, abort it.

An abort is a request, not a kill: a file in the domain's state directory naming the job,
which the job's owner polls (see :class:`~qctl.qemu.runtime.DomainRuntime.job`); the owner
rolls back as for a cancellation. :func:`abort_job` waits until the job has ended. A job's
record reaches the books once it has run one poll period: a job younger than that is not
listed, and an abort that finds the domain's lock held waits for its record.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from qctl.errors import StateError
from qctl.qemu.orphan import cut_short
from qctl.qemu.process import Launcher
from qctl.qemu.runstate import RunState
from qctl.qemu.state import DirectoryGone, DomainDir, StateRoot, atomic_write
from qctl.qemu.summary import read_summary
from qctl.qemu.txn import ABORT_POLL, JobRecord
from qctl.record import record

__all__ = ["ABORT_TIMEOUT", "DomainInfo", "abort_job", "list_domains", "read_job"]

#: how long an abort waits for the job's owner to roll back
ABORT_TIMEOUT = 60.0


@record
class DomainInfo:
    """A line of ``qctl list``: a domain with a state directory, its QEMU, run state and job.

    ``error`` says why the status file could not be read (the domain is then shown with it,
    not left out).
    """

    name: str
    pid: int | None
    running: bool
    state: RunState = RunState.SHUTOFF
    job: JobRecord | None = None
    pending: tuple[str, ...] = ()
    error: str | None = None


#: what ``list`` says of a directory a start (or a removal) cut short left
_CUT_SHORT = "its start (or the removal of its state) was cut short; any command on it cleans up"


def list_domains(root: StateRoot) -> list[DomainInfo]:
    """Every domain of ``root`` with a state directory (see :class:`DomainInfo`)."""
    found = [
        DomainInfo(name, None, False, error=_CUT_SHORT)
        for name in root.starting()
        if cut_short(root.domain(name))
    ]
    for name in root.names():
        directory = root.domain(name)
        try:
            status = read_summary(directory)
        except StateError as exc:
            found.append(DomainInfo(name, None, False, error=str(exc)))
            continue
        running = Launcher().adopt(status.identity, directory.log_file).alive()
        pending = tuple(e.alias for e in status.ledger.pending())
        state = status.state if running else RunState.SHUTOFF
        found.append(DomainInfo(name, status.identity.pid, running, state, status.job, pending))
    return sorted(found, key=lambda info: info.name)


def read_job(directory: DomainDir) -> JobRecord | None:
    """The job the status file records (None when none runs, or the file is gone)."""
    try:
        return read_summary(directory).job
    except StateError:
        return None


async def abort_job(
    name: str,
    *,
    state_root: StateRoot | Path | str | None = None,
    timeout: float = ABORT_TIMEOUT,  # noqa: ASYNC109 - a bound on the owner's rollback
) -> JobRecord:
    """Ask the owner of ``name``'s running job to abort it, and wait until it has.

    Works from any process: the request is a file in the domain's state directory naming
    the job, which the owner polls. :class:`StateError` when no job runs, or when the owner
    does not finish within ``timeout`` seconds.
    """
    root = state_root if isinstance(state_root, StateRoot) else StateRoot(state_root)
    directory = root.domain(name)
    job = read_summary(directory).job
    if job is None and directory.job_running():
        job = await _record_of_running_job(directory, timeout)
    if job is None:
        raise StateError(f"domain {name!r} has no job running")
    if not job.owner_alive:
        raise StateError(
            f"the {job.kind} job on {name!r} was cut short (its process died); "
            "connecting to the domain recovers its books"
        )
    try:
        atomic_write(directory.abort_file, job.id.encode())
    except (FileNotFoundError, DirectoryGone) as exc:  # its directory is being removed
        if not directory.status_file.exists():
            return job  # it ended with its domain
        raise StateError(
            f"could not ask the {job.kind} job on {name!r} to abort ({exc}): try again"
        ) from exc
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            current = read_summary(directory).job
        except StateError:
            return job  # the domain is gone
        if current is None or current.id != job.id:
            return job
        await asyncio.sleep(ABORT_POLL)
    raise StateError(f"the {job.kind} job on {name!r} did not end within {timeout:g} s")


async def _record_of_running_job(directory: DomainDir, patience: float) -> JobRecord | None:
    """The record of the job holding the lock, once it is written (a job shows it after
    one poll period, later when its owner is busy); None when the lock is let go first.
    :class:`StateError` when the lock stays held without a record for ``patience`` s."""
    deadline = time.monotonic() + patience
    while time.monotonic() < deadline:
        await asyncio.sleep(ABORT_POLL / 4)
        job = read_job(directory)
        if job is not None or not directory.job_running():
            return job
    raise StateError(
        f"a job holds the lock of domain {directory.name!r} but has shown no record "
        f"within {patience:g} s"
    )
