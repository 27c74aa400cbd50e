"""Finding and ending the QEMU of a ``start`` that was killed before it recorded it.

``start`` writes its intent (``starting``, naming its own process) before it spawns QEMU,
and QEMU is spawned with ``-pidfile`` in the domain's state directory. A state directory
with an intent but no status file, whose ``start`` is no longer alive, is a start cut
short: its QEMU — found by that pidfile path on its command line, so even one killed before
QEMU wrote the file is found — is killed (it never ran the guest: it waits paused, ``-S``),
which also frees its taps, and the directory is removed. Any later command does this for
the name it touches, under the domain's lock.

A start killed before its intent was written leaves a directory with nothing but its lock
and the intent's temporary file (or an empty one); a removal cut short
(:meth:`~qctl.qemu.state.DomainDir.remove`) leaves some of qctl's own files, its status
file gone first. Either has no status file and no intent, nobody holds its lock, and it
holds nothing qctl does not put there: it is removed the same way (after the same search
for a QEMU, unless it holds nothing but the lock).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
from pathlib import Path

from qctl.errors import ProcessError, StateError
from qctl.qemu.process import ProcessIdentity, QEMUProcess, is_alive, process_identity
from qctl.qemu.state import DomainDir, atomic_write

__all__ = ["clear_start", "cut_short", "note_start", "reap_cut_start", "start_under_way"]

log = logging.getLogger(__name__)

#: how long a killed orphan may take to go
_KILL_WAIT = 5.0
#: what a start may have made before its intent: the lock, and the intent being written
#: (:func:`~qctl.qemu.state.atomic_write`'s temporary file, a "." name)
_BEFORE_INTENT = "lock"


def note_start(directory: DomainDir) -> None:
    """Record that this process is starting the domain (before QEMU is spawned)."""
    me = process_identity(os.getpid())
    data = {"pid": me.pid, "start_time": me.start_time}
    atomic_write(directory.start_file, json.dumps(data).encode())


def clear_start(directory: DomainDir) -> None:
    """The start is over: the status file (or nothing) now says what there is."""
    with contextlib.suppress(FileNotFoundError):
        directory.start_file.unlink()


def cut_short(directory: DomainDir) -> bool:
    """Whether ``directory`` holds a start whose process died before it finished (see the
    module); judged without the domain's lock."""
    return _cut_short(directory, locked=False)


def _cut_short(directory: DomainDir, *, locked: bool) -> bool:
    """:func:`cut_short`; ``locked``: the caller holds the domain's lock (so a directory
    without an intent is not one a live start is about to write it in)."""
    if directory.status_file.exists():
        return False
    try:
        data = json.loads(directory.start_file.read_bytes())
        owner = ProcessIdentity(int(data["pid"]), int(data["start_time"]))
    except FileNotFoundError:
        return _left_behind(directory, locked=locked)
    except (OSError, ValueError, KeyError, TypeError):
        return True  # a damaged intent: nobody can be finishing it
    return not is_alive(owner)


def _left_behind(directory: DomainDir, *, locked: bool) -> bool:
    """Whether ``directory``, which has no status file and no intent, is what a start
    killed before its intent or a removal cut short leaves: nothing but qctl's own files,
    and (unless ``locked``) nobody holding its lock."""
    try:
        left = directory.listing()
        return all(directory.is_own_file(name) for name in left) and (
            locked or not directory.job_running()
        )
    except StateError:  # no such directory (or not one of ours): nothing to end
        return False


def _may_have_spawned(directory: DomainDir) -> bool:
    """Whether what was left may come with a QEMU: anything but the lock and a start's
    intent being written (what a start leaves before its intent, when it spawned nothing)."""
    try:
        left = directory.listing()
    except StateError:
        return False
    return any(name != _BEFORE_INTENT and not name.startswith(".") for name in left)


def start_under_way(directory: DomainDir) -> bool:
    """Whether a live ``start`` is working on ``directory`` (its intent is there, its
    process alive): what it holds already is not stale."""
    return directory.start_file.exists() and not cut_short(directory)


def _qemus_of(pidfile: Path) -> list[int]:
    """Processes whose command line names ``pidfile`` after ``-pidfile``."""
    wanted = ["-pidfile", str(pidfile)]
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            argv = Path(entry.path, "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        args = [a.decode(errors="replace") for a in argv]
        if any(args[i : i + 2] == wanted for i in range(len(args) - 1)):
            found.append(int(entry.name))
    return found


async def reap_cut_start(directory: DomainDir, *, remove: bool = True) -> bool:
    """End what a start (or a removal) cut short left (see the module); True when there was
    one.

    Call it holding the domain's lock, so no live ``start`` is mistaken for a dead one.
    ``remove=False`` keeps the directory (and the lock in it) for a new start.
    """
    if not _cut_short(directory, locked=True):
        return False
    for pid in _qemus_of(directory.pid_file) if _may_have_spawned(directory) else ():
        log.warning("domain %s: killing QEMU %d left by a start (or a removal) cut short",
                    directory.name, pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        identity = _identity(pid)
        if identity is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_KILL_WAIT):
                    await QEMUProcess(identity, directory.log_file).wait()
    if remove:
        directory.remove()
    else:
        clear_start(directory)
    return True


def _identity(pid: int) -> ProcessIdentity | None:
    try:
        return process_identity(pid)
    except ProcessError:  # gone already
        return None
