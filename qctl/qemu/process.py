"""Starting, watching and stopping a QEMU process.

QEMU runs in its own session so it outlives the qctl process that started it (there is no
daemon). Its stderr goes to a log file whose tail is quoted when it fails. Only the fds
named in ``pass_fds`` are inherited (taps, vhost-net), everything else is close-on-exec.

With ``die_with_owner``, QEMU gets SIGKILL when the process that started it dies, however
it dies: a small watchdog process blocks on a pipe whose only writer is the owner, and
kills QEMU (the very process: pid and start time) when the pipe ends. Not the kernel's
``PR_SET_PDEATHSIG``: it is cleared when a confined QEMU drops to its own user, and it
fires when the forking *thread* exits rather than the process.

A QEMU started by another qctl process is not our child: its liveness is judged from
``/proc/PID/stat`` (a zombie counts as gone, since PID 1 may take a while to reap it), and
its start time guards against a PID that was reused.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import stat
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import BinaryIO

from qctl.errors import ProcessError
from qctl.record import record

__all__ = [
    "Launcher",
    "ProcessIdentity",
    "QEMUProcess",
    "is_alive",
    "log_tail",
    "process_identity",
]

_TAIL_BYTES = 2000
#: the thread that forks QEMUs which die with their owner: it lives as long as the process


def log_tail(path: Path, limit: int = _TAIL_BYTES) -> str:
    """The last ``limit`` bytes of a log file as text ('' if it does not exist)."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - limit))
            return handle.read().decode(errors="replace").strip()
    except FileNotFoundError:
        return ""


@record
class ProcessIdentity:
    """A PID plus its start time (clock ticks since boot): unique across PID reuse."""

    pid: int
    start_time: int


def _read_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time) from /proc/PID/stat, or None when there is no such process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name is in parentheses and may itself contain spaces or parentheses.
    fields = raw[raw.rindex(")") + 2 :].split()
    return fields[0], int(fields[19])


def process_identity(pid: int) -> ProcessIdentity:
    """The identity of a running process; ProcessError if it does not exist."""
    stat = _read_stat(pid)
    if stat is None:
        raise ProcessError(f"process {pid} does not exist")
    return ProcessIdentity(pid, stat[1])


def is_alive(identity: ProcessIdentity) -> bool:
    """True while the process runs: exists, is not a zombie, and was not replaced by another."""
    stat = _read_stat(identity.pid)
    return stat is not None and stat[0] not in {"Z", "X"} and stat[1] == identity.start_time


async def _wait_foreign(identity: ProcessIdentity) -> None:
    """Wait for a process that is not our child to exit, through a pidfd (no polling).

    The pidfd becomes readable once every thread of the process has exited, zombie or not.
    Its main thread turns zombie earlier, while QEMU's other threads may still be exiting
    and holding its fds (a tap's name is not free yet), so only the pidfd says "gone". The
    identity is checked after opening it, so a reused PID is never waited on.
    """
    try:
        pidfd = os.pidfd_open(identity.pid)
    except ProcessLookupError:
        return
    try:
        stat = _read_stat(identity.pid)
        if stat is None or stat[1] != identity.start_time:
            return
        loop = asyncio.get_running_loop()
        exited = loop.create_future()
        loop.add_reader(pidfd, exited.set_result, None)
        try:
            await exited
        finally:
            loop.remove_reader(pidfd)
    finally:
        os.close(pidfd)


def _open_log(path: Path) -> BinaryIO:
    """QEMU's log, opened for appending: never through a symlink, only a regular file of the
    current user (a planted link must not make QEMU's output land elsewhere)."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as exc:
        raise ProcessError(f"cannot open QEMU's log {path}: {exc.strerror}") from exc
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid():
        os.close(fd)
        raise ProcessError(f"refusing QEMU's log {path}: not a regular file of uid {os.geteuid()}")
    os.fchmod(fd, 0o600)
    return os.fdopen(fd, "ab")


#: the watchdog of a ``die_with_owner`` QEMU: waits for the owner's end of the pipe (its
#: stdin) to close, then kills QEMU if it is still the same process
_WATCHDOG = """
import os, sys
pid, start = int(sys.argv[1]), sys.argv[2]
while os.read(0, 4096):
    pass
try:
    stat = open(f"/proc/{pid}/stat").read()
    if stat[stat.rindex(")") + 2 :].split()[19] == start:
        os.kill(pid, 9)
except (OSError, ValueError, IndexError):
    pass
"""
#: the owner's ends of the watchdogs' pipes, open until this process ends
_watched: list[int] = []


def _watch_owner(identity: ProcessIdentity) -> None:
    """Start the watchdog that kills ``identity`` when this process ends (see the module)."""
    read_end, write_end = os.pipe()
    try:
        subprocess.Popen(
            [sys.executable, "-c", _WATCHDOG, str(identity.pid), str(identity.start_time)],
            stdin=read_end,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
    except BaseException:
        os.close(write_end)
        raise
    finally:
        os.close(read_end)
    os.set_inheritable(write_end, False)
    _watched.append(write_end)


class QEMUProcess:
    """A QEMU process this qctl process started (its parent), or adopted by identity."""

    def __init__(
        self,
        identity: ProcessIdentity,
        log_path: Path,
        proc: asyncio.subprocess.Process | None = None,
    ) -> None:
        self.identity = identity
        self.log_path = log_path
        self._proc = proc
        # A child forked outside asyncio (die_with_owner): its exit is seen through a pidfd.

    @property
    def pid(self) -> int:
        """The process id."""
        return self.identity.pid

    @classmethod
    async def spawn(
        cls,
        argv: Sequence[str],
        *,
        log_path: Path,
        pass_fds: Sequence[int] = (),
        env: Mapping[str, str] | None = None,
        die_with_owner: bool = False,
    ) -> QEMUProcess:
        """Start QEMU with ``argv``, inheriting only ``pass_fds``; output goes to ``log_path``.
        ``env`` replaces the environment when given.

        ``die_with_owner``: QEMU is killed when this process dies (see the module).
        """
        with _open_log(log_path) as log:
            try:
                proc = await asyncio.create_subprocess_exec(
                    *argv,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    pass_fds=tuple(pass_fds),
                    env=env,
                    start_new_session=True,
                )
            except OSError as exc:
                raise ProcessError(f"cannot start {argv[0]}: {exc.strerror}") from exc
        found = _read_stat(proc.pid)
        identity = ProcessIdentity(proc.pid, found[1] if found else 0)
        if die_with_owner:
            _watch_owner(identity)
        return cls(identity, log_path, proc)

    @property
    def returncode(self) -> int | None:
        """Exit status once a child has exited (None while running, or when not our child)."""
        return None if self._proc is None else self._proc.returncode

    def alive(self) -> bool:
        """True while QEMU runs."""
        if self._proc is not None:
            return self._proc.returncode is None
        return is_alive(self.identity)

    async def wait(self) -> int | None:
        """Wait for QEMU to exit; the exit status when it was our child, else None."""
        if self._proc is not None:
            return await self._proc.wait()
        await _wait_foreign(self.identity)
        return None

    def failure(self, what: str) -> ProcessError:
        """A ProcessError for ``what`` quoting the exit status and the log's tail."""
        return ProcessError(what, returncode=self.returncode, stderr_tail=log_tail(self.log_path))

    def _signal(self, signum: int) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signum)

    async def stop(self, grace: float = 5.0) -> None:
        """SIGTERM, wait up to ``grace`` seconds, then SIGKILL and wait. Idempotent."""
        self._signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(grace):
                await self.wait()
        except TimeoutError:
            self._signal(signal.SIGKILL)
            await self.wait()


class Launcher:
    """How the driver starts QEMU processes and adopts running ones.

    The default runs the real binary. Tests inject a subclass that runs no QEMU at all
    (an in-process fake serving QMP on the monitor sockets), so the driver's transactions
    can be exercised without a guest.
    """

    async def spawn(
        self,
        argv: Sequence[str],
        *,
        log_path: Path,
        pass_fds: Sequence[int] = (),
        env: Mapping[str, str] | None = None,
        die_with_owner: bool = False,
    ) -> QEMUProcess:
        """Start ``argv`` (see :meth:`QEMUProcess.spawn`)."""
        return await QEMUProcess.spawn(
            argv, log_path=log_path, pass_fds=pass_fds, env=env, die_with_owner=die_with_owner
        )

    def adopt(self, identity: ProcessIdentity, log_path: Path) -> QEMUProcess:
        """The process of a domain another qctl process started."""
        return QEMUProcess(identity, log_path)
