"""A domain's status file, written off the event loop.

Writing the status file durably takes a disk round trip (a journal line's ``fdatasync``, or
for the whole file a temp file, fsync, rename and fsync of the directory: see
:mod:`~qctl.qemu.journal`); done in the event loop, one domain's fsync would stall every
other domain's job. :class:`StatusWriter` does the file work in a thread, one write at a
time per domain, and coalesces: changes made while a write is under way go out together in
the next one. Journal lines go to the state root's :class:`~qctl.qemu.commit.Committer`,
which writes every domain's waiting lines in one thread call and syncs them together. Even
appending a line stays off the loop: a write that grows a file takes a journal handle of the file
system, which waits while a commit (another domain's sync) holds the transaction, and a busy
disk throttles writers of dirty pages. A step that depends on its change being on disk
awaits :meth:`StatusWriter.flush`, which returns once a write that began after the change
has finished; other domains' jobs go on meanwhile.

A status file on a file system that keeps files in memory (tmpfs, as ``/run`` is on most
hosts) is written in the event loop itself: there it is a copy in memory that never waits on
a device, and handing it to a thread would cost several times the write
(:func:`~qctl.host.in_memory`); its journal lines are not synced (there is no device). There
a change is written by a callback on the loop's next turn (coalescing what the current turn
changes), or at once by a flush: no task, nothing to wait for. Its journal stays open from
line to line (a line is one ``write``, not five system calls), until the next whole write
or the writer's end; on a disk it is opened for each line, as the line's write may still be
running in the committer's thread when its writer goes away.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import os
from collections.abc import Callable
from pathlib import Path

from qctl.errors import StateError
from qctl.qemu.commit import Written, committer
from qctl.qemu.journal import JOURNAL_NAME, Update
from qctl.qemu.state import append_to, atomic_write, open_append, sync_directory, sync_file
from qctl.qemu.txn import to_the_end

__all__ = ["StatusWriter"]


class StatusWriter:
    """Writes ``render()`` (the whole status file ``path``, or a line for its journal) in a
    thread whenever :meth:`changed` says so, and calls ``written(status, journal)`` (on the
    loop) after each write, with the files' ``stat`` (taken in the thread too: on a busy
    disk a ``stat`` waits behind other writes). After a failed write it calls ``failed()``
    (the renderer then renders the whole file next). With ``inline`` (the file is on tmpfs
    or ramfs) the writes are made in the loop instead; with a ``group`` (the state root),
    journal lines are written in the rounds of its committer, with other domains' (group
    commit)."""

    def __init__(
        self,
        path: Path,
        render: Callable[[], Update],
        written: Callable[[os.stat_result, os.stat_result | None], None],
        *,
        failed: Callable[[], None] = lambda: None,
        inline: bool = False,
        group: Path | None = None,
    ) -> None:
        self._path = path
        self._group = group
        self._journal = path.with_name(JOURNAL_NAME)
        self._inline = inline
        self._render = render
        self._on_written = written
        self._on_failed = failed
        self._status: os.stat_result | None = None  # the status file as last written whole
        self._journal_info: os.stat_result | None = None
        #: the journal was made since the last whole write and its name is not yet durable
        self._journal_unnamed = False
        #: inline only: the journal, kept open from line to line (every write is made in the
        #: loop, so none can race its closing); closed by a whole write, a failure, aclose
        self._journal_fd: int | None = None
        self._version = 0  # bumped by every change
        self._written = 0  # the version the files have (what other processes read)
        self._synced = 0  # the version on disk (what a crash keeps)
        self._sync_wanted = 0  # the version a flush waits to have on disk
        self._task: asyncio.Task[None] | None = None
        #: the flushes waiting: (version, durable, woken when it is reached or failed)
        self._waiters: list[tuple[int, bool, asyncio.Future[None]]] = []
        self._failure: StateError | None = None  # the thread's last write failed…
        self._failed_version = 0  # …and the version it was to write
        self._soon = False  # inline: a write is scheduled for the loop's next turn
        self.closed = False

    @property
    def unwritten(self) -> bool:
        """Whether a change has not reached the files yet (or its write failed)."""
        return self._written < self._version

    def changed(self) -> None:
        """The books changed: write them soon (without waiting)."""
        self._version += 1
        if not self._inline:
            self._kick()
        elif not self._soon:  # a callback, not a task: an inline write never waits
            self._soon = True
            asyncio.get_running_loop().call_soon(self._write_soon)

    def _kick(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name=f"status writer {self._path}")

    async def flush(self, *, durable: bool = True, shielded: bool = False) -> None:
        """Wait until every change made so far is on disk, or without ``durable`` until
        other processes read it (written, not yet synced: what a crash then loses, the
        next connect reconciles). A failed write raises here, to every flush whose change
        it had; a flush whose change came later waits for the write that has it. A flush
        after a failure writes again. Returns at once once closed. ``shielded``: a
        cancellation meanwhile is raised only once the write is over (a job's end must
        not let its lock go before its books are written: :func:`~qctl.qemu.txn.to_the_end`);
        if that write fails, its error is raised instead of the cancellation."""
        target = self._version
        if self.closed:
            return
        if self._inline:  # written here and now (a failure raises): nothing to wait for
            if self._written < target:
                self._write_inline()
            return
        if self._failure is not None and (self._task is None or self._task.done()):
            self._failure = None  # the write that failed is over: try again
        if durable and self._synced < target:
            self._sync_wanted = max(self._sync_wanted, target)
        if (self._synced if durable else self._written) >= target:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((target, durable, waiter))
        self._kick()
        await (to_the_end(waiter) if shielded else waiter)  # (a future: no task made)

    def _settle(self) -> None:
        """Wake the flushes the end of a write (or closing) answers: their change written
        (or on disk), or failed with the write that had it, or nothing more to wait for."""
        waiting = []
        for target, durable, waiter in self._waiters:
            if waiter.done():  # its caller gave up (cancelled)
                continue
            if self.closed or (self._synced if durable else self._written) >= target:
                waiter.set_result(None)
            elif self._failure is not None and self._failed_version >= target:
                waiter.set_exception(self._failure)
            else:
                waiting.append((target, durable, waiter))
        self._waiters = waiting

    def _write_soon(self) -> None:
        self._soon = False
        if self._written < self._version and not self.closed:
            with contextlib.suppress(StateError):  # the next flush writes again, and says
                self._write_inline()

    def _write_inline(self) -> None:
        version = self._version
        update = self._render()
        try:
            written = self._store(update, False)
        except (OSError, StateError) as exc:
            failure = self._failed(exc)
            if failure is exc:
                raise
            raise failure from exc
        self._wrote(version, written, synced=True)  # in memory: nothing to sync

    async def _run(self) -> None:
        try:
            await self._write_all()
        except BaseException as exc:
            # Stopped short (cancelled as the loop shuts down, or a bug): a write under way
            # goes on in its thread unseen, so the renderer takes nothing for granted (the
            # next write is whole), and no flush waits for an answer that will not come.
            self._on_failed()
            self._failure = StateError(f"the writer of {self._path} stopped: {exc!r}")
            self._failed_version = self._version
            self._settle()
            raise

    async def _write_all(self) -> None:
        while (self._written < self._version or self._synced < self._sync_wanted) and not (
            self.closed
        ):
            version = self._version
            sync = self._synced < self._sync_wanted
            update = self._render()  # on the loop: the books are the loop's
            if update.append and self._nothing_to_append(update.data, sync):
                assert self._status is not None, "a journal line follows a whole write"
                self._wrote(version, (self._status, self._journal_info), synced=sync)
                self._settle()
                continue  # (no thread for nothing)
            try:
                if update.append and self._group is not None:
                    line = functools.partial(self._append, update.data, sync)
                    written = await committer(self._group).write(line, sync=sync)
                else:
                    written = await asyncio.shield(asyncio.to_thread(self._store, update, sync))
            except Exception as exc:  # handed to every flush waiting for what it had
                failure = self._failed(exc)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise
                # not this task's cancellation: its committer's (whose loop shuts down)
                failure = self._failed(StateError(f"the write of {self._path} was abandoned"))
            else:
                self._wrote(version, written, synced=sync or not update.append)  # whole: synced
                self._settle()
                continue
            self._failure, self._failed_version = failure, version
            self._settle()
            if not self._waiters:
                return
            # flushes of later changes wait: their write is tried at once

    def _failed(self, exc: Exception) -> StateError:
        """A failed write: the renderer is told (its next write is whole), and the error
        said as a StateError naming the file (a refusal to trust the journal already is)."""
        self._close_journal()  # (inline) the next write is whole
        self._on_failed()
        if isinstance(exc, StateError):
            return exc
        if isinstance(exc, OSError):
            full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
            what = "no space left" if full else f"cannot write ({exc.strerror})"
        else:
            what = f"cannot write ({exc!r})"
        failure = StateError(f"{what} writing {self._path}; its old content is kept")
        failure.__cause__ = exc
        return failure

    def _wrote(self, version: int, written: Written, *, synced: bool) -> None:
        self._failure = None  # this write has what a failed one had
        self._status, self._journal_info = written
        self._written = version
        if synced:
            self._synced = version
        self._on_written(*written)

    def _store(self, update: Update, sync: bool) -> Written:
        """Make one write (in the thread, or inline): a journal line (``fdatasync``ed with
        ``sync``, which makes the lines before it last too), or the whole file and then the
        old journal's removal (its lines are of the old generation now)."""
        if not update.append:
            self._close_journal()  # about to be replaced
            status = atomic_write(self._path, update.data)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._journal)
            self._journal_unnamed = False
            return status, None
        return self._append(update.data, sync)

    def _append(self, data: bytes, sync: bool, held: list[int] | None = None) -> Written:
        """Append a line to the journal; with ``sync``, make it durable (and the lines
        before it): itself, or when ``held`` is given by leaving the journal open in it for
        the committer's sync of the file system (see :mod:`~qctl.qemu.commit`)."""
        assert self._status is not None, "a journal line follows a whole write"
        if self._nothing_to_append(data, sync):
            return self._status, self._journal_info
        if self._journal_fd is not None:
            info = append_to(self._journal_fd, data)  # (inline: nothing to sync)
            return self._status, info
        fd, new = open_append(self._journal)
        try:
            info = append_to(fd, data)
            if sync and held is None:
                sync_file(fd)
        except BaseException:
            os.close(fd)
            raise
        if sync and held is not None:
            held.append(fd)  # the committer syncs its file system, then closes it
        elif self._inline:
            self._journal_fd = fd
        else:
            os.close(fd)
        self._journal_unnamed |= new
        if sync and self._journal_unnamed:  # the journal's name must last too
            if held is None:
                sync_directory(self._path.parent)
            # else the file system's sync makes it so; if that fails, the writer's next
            # write is whole (see _failed), which replaces this journal
            self._journal_unnamed = False
        return self._status, info

    def _close_journal(self) -> None:
        if self._journal_fd is not None:
            fd, self._journal_fd = self._journal_fd, None
            os.close(fd)

    def _nothing_to_append(self, data: bytes, sync: bool) -> bool:
        """No line to write and, with ``sync``, none to make durable either (no line was
        written since the last whole write, which is synced)."""
        return not data and (not sync or self._journal_info is None)

    async def aclose(self) -> None:
        """Finish the write under way or due (never cut one short), then stop."""
        if self._inline:
            self._write_soon()
        while (task := self._task) is not None and not task.done():  # (a flush may start one)
            try:
                await asyncio.shield(task)
            except asyncio.CancelledError:
                if not task.cancelled():  # this call was cancelled, not the writer
                    raise
            except Exception:  # what failed is the flushes' to say
                continue
        self.closed = True
        self._close_journal()
        self._settle()  # a flush still waiting returns
