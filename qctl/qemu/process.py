"""Starting, watching and stopping a QEMU process.

QEMU runs in its own session so it outlives the qctl process that started it (there is no
daemon). Its stderr goes to a log file whose tail is quoted when it fails. Only the fds
named in ``pass_fds`` are inherited (taps, vhost-net), everything else is close-on-exec.

With ``die_with_owner``, QEMU gets SIGKILL when the process that started it dies, however
it dies (``prctl(PR_SET_PDEATHSIG)`` in the child). The kernel sends that signal when the
*thread* that forked exits, not the process; so such a QEMU is forked from one thread qctl
keeps for the life of the process, never from the caller's thread (an event loop run in a
short-lived thread would otherwise kill its QEMU on leaving). The child checks that its
parent is still the owner after arming the signal, closing the window where the owner died
during the fork.

A QEMU started by another qctl process is not our child: its liveness is judged from
``/proc/PID/stat`` (a zombie counts as gone, since PID 1 may take a while to reap it), and
its start time guards against a PID that was reused.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import subprocess
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from qctl.errors import ProcessError

__all__ = ["ProcessIdentity", "QEMUProcess", "is_alive", "log_tail", "process_identity"]

_TAIL_BYTES = 2000
_PR_SET_PDEATHSIG = 1
#: the thread that forks QEMUs which die with their owner: it lives as long as the process
_owner_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="qctl-owner")


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


@dataclass(frozen=True, slots=True)
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

    The pidfd becomes readable when the process exits, zombie or not. The identity is
    checked after opening it, so a reused PID is never waited on.
    """
    try:
        pidfd = os.pidfd_open(identity.pid)
    except ProcessLookupError:
        return
    try:
        if not is_alive(identity):
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


def _arm_death_signal(owner: int) -> Callable[[], None]:
    """The child's pre-exec step: SIGKILL when the forking thread dies; exit at once when
    the owner is already gone. libc is loaded here, in the parent: the child only calls."""
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def arm() -> None:
        if prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0 or os.getppid() != owner:
            os._exit(127)

    return arm


def _popen_dying_with_owner(
    argv: Sequence[str], log: int, pass_fds: Sequence[int]
) -> subprocess.Popen[bytes]:
    """Fork and exec QEMU (run in the owner thread)."""
    return subprocess.Popen(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
        pass_fds=tuple(pass_fds),
        start_new_session=True,
        preexec_fn=_arm_death_signal(os.getpid()),
    )


class QEMUProcess:
    """A QEMU process this qctl process started (its parent), or adopted by identity."""

    def __init__(
        self,
        identity: ProcessIdentity,
        log_path: Path,
        proc: asyncio.subprocess.Process | None = None,
        *,
        popen: subprocess.Popen[bytes] | None = None,
    ) -> None:
        self.identity = identity
        self.log_path = log_path
        self._proc = proc
        # A child forked outside asyncio (die_with_owner): its exit is seen through a pidfd.
        self._popen = popen

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
        die_with_owner: bool = False,
    ) -> QEMUProcess:
        """Start QEMU with ``argv``, inheriting only ``pass_fds``; output goes to ``log_path``.

        ``die_with_owner``: QEMU is killed when this process dies (see the module).
        """
        with log_path.open("ab") as log:
            os.fchmod(log.fileno(), 0o600)
            if die_with_owner:
                return await cls._spawn_dying_with_owner(argv, log.fileno(), log_path, pass_fds)
            try:
                proc = await asyncio.create_subprocess_exec(
                    *argv,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    pass_fds=tuple(pass_fds),
                    start_new_session=True,
                )
            except OSError as exc:
                raise ProcessError(f"cannot start {argv[0]}: {exc.strerror}") from exc
        stat = _read_stat(proc.pid)
        identity = ProcessIdentity(proc.pid, stat[1] if stat else 0)
        return cls(identity, log_path, proc)

    @classmethod
    async def _spawn_dying_with_owner(
        cls, argv: Sequence[str], log: int, log_path: Path, pass_fds: Sequence[int]
    ) -> QEMUProcess:
        loop = asyncio.get_running_loop()
        try:
            popen = await loop.run_in_executor(
                _owner_thread, _popen_dying_with_owner, argv, log, pass_fds
            )
        except OSError as exc:
            raise ProcessError(f"cannot start {argv[0]}: {exc.strerror}") from exc
        stat = _read_stat(popen.pid)
        return cls(ProcessIdentity(popen.pid, stat[1] if stat else 0), log_path, popen=popen)

    @property
    def returncode(self) -> int | None:
        """Exit status once a child has exited (None while running, or when not our child)."""
        if self._popen is not None:
            return self._popen.poll()
        return None if self._proc is None else self._proc.returncode

    def alive(self) -> bool:
        """True while QEMU runs."""
        if self._popen is not None:
            return self._popen.poll() is None
        if self._proc is not None:
            return self._proc.returncode is None
        return is_alive(self.identity)

    async def wait(self) -> int | None:
        """Wait for QEMU to exit; the exit status when it was our child, else None."""
        if self._proc is not None:
            return await self._proc.wait()
        await _wait_foreign(self.identity)
        if self._popen is not None:
            return self._popen.wait()  # it has exited: this only reaps it
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
