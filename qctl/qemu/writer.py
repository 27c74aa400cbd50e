"""A domain's status file, written off the event loop.

Writing the status file atomically and durably (temp file, fsync, rename, fsync of the
directory) takes a disk round trip; done in the event loop, one domain's fsync would stall
every other domain's job. :class:`StatusWriter` does the file work in a thread, one write
at a time per domain, and coalesces: changes made while a write is under way go out
together in the next one. A step that depends on its change being on disk awaits
:meth:`StatusWriter.flush`, which returns once a write that began after the change has
finished; other domains' jobs go on meanwhile.

A status file on a file system that keeps files in memory (tmpfs, as ``/run`` is on most
hosts) is written in the event loop itself: there it is a copy in memory that never waits on
a device, and handing it to a thread would cost several times the write
(:func:`~qctl.host.in_memory`).
"""

from __future__ import annotations

import asyncio
import errno
import os
from collections.abc import Callable
from pathlib import Path

from qctl.errors import StateError
from qctl.qemu.state import atomic_write

__all__ = ["StatusWriter"]


class StatusWriter:
    """Writes ``render()`` to ``path`` in a thread whenever :meth:`changed` says so, and
    calls ``written(info)`` (on the loop) after each write, with the new file's ``stat``
    (taken in the thread too: on a busy disk a ``stat`` waits behind other writes). With
    ``inline`` (the file is on tmpfs or ramfs) the writes are made in the loop instead."""

    def __init__(
        self,
        path: Path,
        render: Callable[[], bytes],
        written: Callable[[os.stat_result], None],
        *,
        inline: bool = False,
    ) -> None:
        self._path = path
        self._inline = inline
        self._render = render
        self._on_written = written
        self._version = 0  # bumped by every change
        self._written = 0  # the version the file on disk has
        self._task: asyncio.Task[None] | None = None
        self._done = asyncio.Condition()
        self._failure: BaseException | None = None
        self.closed = False

    def changed(self) -> None:
        """The books changed: write them soon (without waiting)."""
        self._version += 1
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name=f"status writer {self._path}")

    async def flush(self) -> None:
        """Wait until every change made so far is on disk; a failed write raises here."""
        target = self._version
        async with self._done:
            await self._done.wait_for(lambda: self._written >= target or self._failure is not None)
            if self._failure is not None and self._written < target:
                failure, self._failure = self._failure, None
                raise failure

    async def _run(self) -> None:
        while self._written < self._version and not self.closed:
            version = self._version
            data = self._render()  # on the loop: the books are the loop's
            try:
                if self._inline:
                    info = atomic_write(self._path, data)
                else:
                    info = await asyncio.shield(asyncio.to_thread(atomic_write, self._path, data))
            except OSError as exc:  # handed to whoever flushes, as what it is
                full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
                what = "no space left" if full else f"cannot write ({exc.strerror})"
                self._failure = StateError(f"{what} writing {self._path}; its old content is kept")
                self._failure.__cause__ = exc
                async with self._done:
                    self._done.notify_all()
                return
            self._written = version
            self._on_written(info)
            async with self._done:
                self._done.notify_all()

    async def aclose(self) -> None:
        """Finish the write under way (never cut one short), then stop."""
        task = self._task
        if task is not None and not task.done():
            await asyncio.shield(task)
        self.closed = True
