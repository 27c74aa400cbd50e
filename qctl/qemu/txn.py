"""The pieces every job of the driver is made of: the undo, the lock and the job record.

* :func:`unwind` runs a transaction's undo steps to their end, shielded from cancellation,
  keeping the original error;
* :class:`JobLock` lets one modifying job at a time work on a domain: an ``asyncio.Lock``
  inside this process plus the state directory's ``flock`` across processes;
* :class:`JobRecord` is what the status file says of the job under way (kind, device,
  owner, start, progress), so other processes can show it (``qctl job``) and abort it
  (``qctl job-abort``) without ever waiting for the lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any, TypeVar

from qctl.errors import StateError, add_rollback_note
from qctl.qemu.process import ProcessIdentity, is_alive, process_identity
from qctl.qemu.state import DomainDir, FileLock, HeldOpenLock
from qctl.record import record

__all__ = [
    "ABORT_POLL",
    "LOCK_TIMEOUT",
    "JobLock",
    "JobRecord",
    "take_lock",
    "to_the_end",
    "unwind",
]

log = logging.getLogger(__name__)

#: how long a job waits for another process's job on the same domain
LOCK_TIMEOUT = 30.0
#: how often a running job looks for an abort request from another process (seconds)
ABORT_POLL = 0.1

_job_ids = itertools.count(1)
T = TypeVar("T")


async def to_the_end(work: Awaitable[T]) -> T:
    """Await ``work`` to its end even when cancelled meanwhile; a cancellation that came
    is raised once it is done (for cleanup that must not be cut short)."""
    task = asyncio.ensure_future(work)
    cancelled = False
    while True:
        try:
            result = await asyncio.shield(task)
            break
        except asyncio.CancelledError:
            if task.done():
                raise
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError
    return result


async def unwind(stack: contextlib.AsyncExitStack, error: BaseException, step: str) -> None:
    """Run every pushed undo to its end, shielded from cancellation; failures become notes
    on ``error``.

    A cancellation arriving meanwhile is held until the undo is done (and then raised):
    the caller's locks must not be let go while the undo still changes things.
    """
    undo = asyncio.ensure_future(stack.aclose())
    cancelled = False
    while True:
        try:
            await asyncio.shield(undo)
            break
        except asyncio.CancelledError:
            if undo.done():
                break
            cancelled = True
        except Exception as failure:  # kept as a note: the original error wins
            log.warning("rollback after failed %s: %s", step, failure)
            add_rollback_note(error, failure, step)
            break
    if cancelled:
        raise asyncio.CancelledError


async def take_lock(directory: DomainDir) -> FileLock:
    """The domain's file lock for a one-off job (start, a dead QEMU's release), waiting at
    most :data:`LOCK_TIMEOUT` seconds."""
    try:
        async with asyncio.timeout(LOCK_TIMEOUT):
            return await directory.lock()
    except TimeoutError:
        raise StateError(
            f"domain {directory.name!r} is busy: another qctl process holds its lock"
        ) from None


@record
class JobRecord:
    """The job under way on a domain, as the status file shows it to other processes.

    ``id`` is unique to its owner (pid, start time and a counter), so an abort request
    names exactly the job it was meant for.
    """

    id: str
    kind: str
    owner: ProcessIdentity
    started: float
    alias: str | None = None
    progress: str | None = None

    @classmethod
    def begin(cls, kind: str, alias: str | None = None) -> JobRecord:
        """A new job of this process, starting now."""
        owner = _own_identity()
        return cls(
            id=f"{owner.pid}.{owner.start_time}.{next(_job_ids)}",
            kind=kind,
            owner=owner,
            started=time.time(),
            alias=alias,
        )

    @property
    def owner_alive(self) -> bool:
        """Whether the process that runs this job still lives (else the job was cut short
        and the next connect recovers the books)."""
        return is_alive(self.owner)

    def describe(self) -> str:
        """One line: ``attach ua-net1 (pid 123, 4.2 s)``, and whether its owner died."""
        what = f"{self.kind} {self.alias}" if self.alias else self.kind
        age = max(0.0, time.time() - self.started)
        tail = f", {self.progress}" if self.progress else ""
        owner = "owner died" if not self.owner_alive else f"pid {self.owner.pid}"
        return f"{what} ({owner}, {age:.1f} s{tail})"

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "id": self.id,
            "kind": self.kind,
            "alias": self.alias,
            "pid": self.owner.pid,
            "pid_start_time": self.owner.start_time,
            "started": self.started,
            "progress": self.progress,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> JobRecord:
        """Rebuild a record written by :meth:`to_json` (KeyError/TypeError when damaged)."""
        return cls(
            id=str(data["id"]),
            kind=str(data["kind"]),
            owner=ProcessIdentity(int(data["pid"]), int(data["pid_start_time"])),
            started=float(data["started"]),
            alias=None if data.get("alias") is None else str(data["alias"]),
            progress=None if data.get("progress") is None else str(data["progress"]),
        )


_identity: ProcessIdentity | None = None


def _own_identity() -> ProcessIdentity:
    global _identity
    if _identity is None or _identity.pid != os.getpid():  # a fork has its own
        _identity = process_identity(os.getpid())
    return _identity


class JobLock:
    """One job at a time on a domain: in this process and across processes.

    The lock file stays open for the handle's life (``flock`` per job, no ``open``), and
    the wait for another process is bounded by :data:`LOCK_TIMEOUT`.
    """

    def __init__(self, name: str, lock_file: Path) -> None:
        self._name = name
        self._local = asyncio.Lock()
        self._file = HeldOpenLock(lock_file)

    @contextlib.asynccontextmanager
    async def held(self, patience: float = LOCK_TIMEOUT) -> AsyncIterator[None]:
        """Hold the lock for the block; :class:`StateError` when another process keeps it
        longer than ``patience`` seconds."""
        async with self._local:
            if not self._file.try_acquire():  # free, as it mostly is: no timer to set
                try:
                    async with asyncio.timeout(patience):
                        await self._file.acquire()
                except TimeoutError:
                    raise StateError(
                        f"domain {self._name!r} is busy: another qctl process holds its lock"
                    ) from None
            try:
                yield
            finally:
                self._file.release()

    @contextlib.asynccontextmanager
    async def held_if_free(self) -> AsyncIterator[bool]:
        """Take the lock only if nobody holds it; the block learns whether it got it.

        For work that is welcome but not needed while another job runs (reconciling on
        connect: the job's owner keeps the books meanwhile).
        """
        if self._local.locked():
            yield False
            return
        async with self._local:
            if not self._file.try_acquire():
                yield False
                return
            try:
                yield True
            finally:
                self._file.release()

    def close(self) -> None:
        """Close the lock file (idempotent)."""
        self._file.close()
