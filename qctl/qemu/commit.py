"""Group commit: the journal lines of every domain under one state root, written by one
thread call and made durable by one sync of their file system.

On a disk, a hot-plug step's intent must be durable before QEMU is asked (see
:mod:`~qctl.qemu.writer`). One ``fdatasync`` per domain costs each a commit of the file
system's journal and a device flush, one after the other: on ext4 here about 200 µs of wall
time and 90 µs of CPU each (150 and 50 when all lines are appended first), so 64 domains
detaching at once spent most of the controller's time syncing. A :class:`Committer` takes
every line waiting when its thread is free and writes them in one call; when two or more of
them must be durable, one ``syncfs`` of their file system makes them all so (15 µs and
4 µs of CPU per line with 64 waiting). A lone line is synced by itself (``fdatasync``).

``syncfs`` is called on a journal's fd opened before the round's first durable append, so
a write-back error since then is reported to it (Linux 5.8 and later), as is an earlier one
nobody has seen yet (one another program's ``syncfs`` saw first is not). Its reach is the
whole file system: it also writes back other files' dirty pages there, and an error of any
of them fails the round's durable lines (their writers' next write is then the whole file).
Lines that need not be durable are handed back as soon as they are written, not after the
sync.

One committer per state root and event loop (:func:`committer`): the domains of a state root
share a file system, so a slow device holds up all of them anyway; another state root's
domains never wait for it.
"""

from __future__ import annotations

import asyncio
import os
import weakref
from collections.abc import Callable
from pathlib import Path

from qctl.host import sync_file_system

#: what a write leaves on disk: the status file's ``stat``, and its journal's (None: none)
Written = tuple[os.stat_result, os.stat_result | None]
#: a line's write, ``work(held)``: it appends the line; when it must be durable, it syncs
#: the file itself if ``held`` is None, else leaves the file open and adds its fd to
#: ``held`` (the committer syncs the file system and closes it)
Work = Callable[[list[int] | None], Written]
Outcome = Written | Exception

__all__ = ["Committer", "Work", "Written", "committer"]


class _Waiting:
    """A line handed to the committer: its write, whether it must be durable, and the
    future its writer awaits."""

    __slots__ = ("future", "sync", "work")

    def __init__(self, work: Work, sync: bool, future: asyncio.Future[Written]) -> None:
        self.work = work
        self.sync = sync
        self.future = future

    def settle(self, outcome: Outcome) -> None:
        """Hand the outcome to the writer (unless it gave up waiting: cancelled)."""
        if self.future.done():
            return
        if isinstance(outcome, Exception):
            self.future.set_exception(outcome)
        else:
            self.future.set_result(outcome)


class Committer:
    """Writes the lines handed to it (:meth:`write`) in rounds: one thread call per round,
    with every line handed in while the previous round ran, and one sync per file system
    when more than one of them must be durable."""

    def __init__(self, root: Path) -> None:
        self._root = root
        self._waiting: list[_Waiting] = []
        self._task: asyncio.Task[None] | None = None

    def write(self, work: Work, *, sync: bool) -> asyncio.Future[Written]:
        """Hand a line's write over; the future has what ``work`` returned once it is
        written (and with ``sync`` on disk), or the error that kept it from being so."""
        future: asyncio.Future[Written] = asyncio.get_running_loop().create_future()
        self._waiting.append(_Waiting(work, sync, future))
        if self._task is None:
            self._task = asyncio.create_task(self._rounds(), name=f"committer {self._root}")
        return future

    async def _rounds(self) -> None:
        loop = asyncio.get_running_loop()
        batch: list[_Waiting] = []
        try:
            while self._waiting:
                # a line whose writer was cancelled meanwhile is not written: its writer
                # took nothing for granted (its next write is whole)
                batch = [waiting for waiting in self._waiting if not waiting.future.done()]
                self._waiting = []
                if not batch:
                    continue
                try:
                    outcomes = await asyncio.to_thread(self._round, batch, loop)
                except Exception as exc:  # no round at all (no executor: the loop closes)
                    outcomes = [exc] * len(batch)
                for waiting, outcome in zip(batch, outcomes, strict=True):
                    waiting.settle(outcome)
                batch = []
        finally:
            # Cancelled (the loop shuts down): a round under way goes on in its thread,
            # unseen; nobody waits for it, nor for what was still to come.
            for waiting in batch + self._waiting:
                waiting.future.cancel()
            self._waiting = []
            self._task = None

    @staticmethod
    def _round(batch: list[_Waiting], loop: asyncio.AbstractEventLoop) -> list[Outcome]:
        """One round, in the thread: every line written, then made durable together. A line
        that need not be durable is handed back at once when others wait for a sync."""
        syncing = any(waiting.sync for waiting in batch)
        held: list[int] | None = [] if sum(waiting.sync for waiting in batch) > 1 else None
        outcomes: list[Outcome] = []
        try:
            for waiting in batch:
                try:
                    outcome: Outcome = waiting.work(held if waiting.sync else None)
                except Exception as exc:  # said to this line's writer only
                    outcome = exc
                outcomes.append(outcome)
                if syncing and not waiting.sync:
                    loop.call_soon_threadsafe(waiting.settle, outcome)
            if held:
                try:
                    _sync_each_file_system(held)
                except OSError as exc:  # no durable line of this round is known to be so
                    return [
                        exc if waiting.sync and not isinstance(outcome, Exception) else outcome
                        for waiting, outcome in zip(batch, outcomes, strict=True)
                    ]
            return outcomes
        finally:
            for fd in held or ():
                os.close(fd)


def _sync_each_file_system(fds: list[int]) -> None:
    """One ``syncfs`` per file system among the files open as ``fds``, each through the
    first of its files opened (so before any of the round's appends to them)."""
    first: dict[int, int] = {}
    for fd in fds:
        first.setdefault(os.fstat(fd).st_dev, fd)
    for fd in first.values():
        sync_file_system(fd)


_COMMITTERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[Path, Committer]] = (
    weakref.WeakKeyDictionary()
)


def committer(root: Path) -> Committer:
    """The running loop's committer for the state root ``root`` (made on first use)."""
    per_loop = _COMMITTERS.setdefault(asyncio.get_running_loop(), {})
    found = per_loop.get(root)
    if found is None:
        found = per_loop[root] = Committer(root)
    return found
