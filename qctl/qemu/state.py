"""Where a running domain's state lives on disk, how it is written safely, and why it is trusted.

Layout under the state root (``--state-dir``, ``$QCTL_STATE_DIR``, ``/run/qctl`` for root,
``$XDG_RUNTIME_DIR/qctl`` otherwise)::

    ROOT/                      0700
      domains/NAME/            0700, one per running domain
        qmp.sock, qmp-N.sock   0600, QEMU's monitors (one client each)
        status.json            live XML + ledger, written atomically
        status.journal         hot-plug steps since (:mod:`~qctl.qemu.journal`)
        qemu.log               QEMU's stderr
        console.log            everything the guest wrote on its serial console
        lock                   flock()ed by the process working on the domain
      networks/                pool definitions and allocations (:mod:`qctl.qemu.network`)

Trust: what is found here decides which binary runs as root and who gets a tap's fd, so the
root and every directory under it are used only when they belong to the current user and
nobody else can write them. Directories are opened one level at a time from the one above
(``openat``-style, with ``O_NOFOLLOW``), so a planted symlink is refused, never followed;
files are opened the same way and checked after opening (``fstat``). The root's ancestors
must belong to root or the current user, and be writable by others only when sticky (like
``/tmp``), so nobody can swap the root for another directory (they are walked at most once a
second: :func:`_open_root`). qctl changes the mode only of what it created. Directories it
creates are 0700 whoever creates them; commands that only read create nothing.

Writes go to a temporary file in the same directory, are fsynced, then renamed over the
old file and the directory fsynced, so a reader (or a crash) only ever sees a whole file.
A journal is appended to instead (:func:`append_to`); its reader drops a torn last line.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import functools
import itertools
import json
import logging
import os
import socket
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from qctl.errors import StateError
from qctl.qemu.journal import JOURNAL_NAME, merge
from qctl.qemu.process import ProcessIdentity, is_alive
from qctl.types import OBJECT_NAME_RULE, is_object_name

__all__ = [
    "DirectoryGone",
    "DomainDir",
    "FileLock",
    "HeldOpenLock",
    "StateRoot",
    "append_to",
    "atomic_write",
    "default_state_root",
    "lock_file",
    "open_append",
    "open_private_file",
    "sync_directory",
    "sync_file",
]

log = logging.getLogger(__name__)

#: QMP monitors per domain (see :attr:`DomainDir.qmp_sockets`)
MONITORS = 3
#: the files qctl (or QEMU for it) puts in a domain directory, besides the monitors'
#: sockets and temporary files (see the module)
_OWN_FILES = frozenset(
    {"status.json", JOURNAL_NAME, "starting", "abort", "qemu.log", "qemu.pid", "console.log",
     "lock"}
)

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
#: mode bits that let someone besides the owner change a file or directory
_OTHERS_WRITE = stat.S_IWGRP | stat.S_IWOTH


def default_state_root(env: dict[str, str] | None = None) -> Path:
    """The state root: ``$QCTL_STATE_DIR``, else /run/qctl for root, else the XDG runtime dir.

    Neither default is in a world-writable place: /run is root's, the runtime dir the user's.
    """
    env = dict(os.environ) if env is None else env
    if env.get("QCTL_STATE_DIR"):
        return Path(env["QCTL_STATE_DIR"])
    if os.geteuid() == 0:
        return Path("/run/qctl")
    runtime = env.get("XDG_RUNTIME_DIR") or f"/run/user/{os.geteuid()}"
    return Path(runtime) / "qctl"


def _refusal(path: Path | str, info: os.stat_result, kind: str) -> StateError | None:
    """Why ``info`` (of ``path``) may not be trusted as part of the state, or None."""
    if info.st_uid != os.geteuid():
        return StateError(
            f"refusing {kind} {path}: it belongs to uid {info.st_uid}, not to uid "
            f"{os.geteuid()} running qctl"
        )
    if info.st_mode & _OTHERS_WRITE:
        return StateError(
            f"refusing {kind} {path}: group or others may write it "
            f"(mode {stat.S_IMODE(info.st_mode):04o})"
        )
    return None


def _check_ancestor(path: str, fd: int) -> None:
    """An ancestor of the root must not let anyone else rename or replace what is in it."""
    info = os.fstat(fd)
    if info.st_uid not in (0, os.geteuid()):
        raise StateError(
            f"refusing state root under {path}: that directory belongs to uid {info.st_uid}"
        )
    if info.st_mode & _OTHERS_WRITE and not info.st_mode & stat.S_ISVTX:
        raise StateError(
            f"refusing state root under {path}: others may write that directory and it is "
            f"not sticky (mode {stat.S_IMODE(info.st_mode):04o})"
        )


def _not_a_directory(parent_fd: int | None, name: str, path: str | Path) -> StateError:
    try:
        info = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
    except OSError:
        return StateError(f"refusing state directory {path}: it cannot be opened")
    what = "a symlink" if stat.S_ISLNK(info.st_mode) else "not a directory"
    return StateError(f"refusing state directory {path}: it is {what}")


def _open_dir(parent_fd: int | None, name: str, path: str | Path, *, create: bool) -> int:
    """Open directory ``name`` of ``parent_fd`` (never through a symlink) and check it is ours.

    With ``create``, a missing directory is made 0700. FileNotFoundError when it is missing
    and not to be created.
    """
    created = False
    if create:
        try:
            os.mkdir(name, 0o700, dir_fd=parent_fd)
            created = True
        except FileExistsError:
            pass
        except OSError as exc:
            raise StateError(f"cannot create state directory {path}: {exc.strerror}") from exc
    try:
        fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
    except FileNotFoundError:
        raise
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise _not_a_directory(parent_fd, name, path) from None
        raise StateError(f"cannot open state directory {path}: {exc.strerror}") from exc
    try:
        refusal = _refusal(path, os.fstat(fd), "state directory")
        if refusal is not None:
            raise refusal
        if created:
            os.fchmod(fd, 0o700)  # ours: the umask may have taken bits away
    except BaseException:
        os.close(fd)
        raise
    return fd


#: the root's parent directories whose ancestors were checked, by their path: which
#: directory that was (``st_dev``, ``st_ino``), and when (``time.monotonic``)
_CHECKED_PARENTS: dict[str, tuple[int, int, float]] = {}
#: how long (seconds) a walk of the ancestors holds
_CHECKED_FOR = 1.0


def _open_root(path: Path, *, create: bool) -> int:
    """Open the state root ``path`` after checking every directory on the way to it.

    Paths are plain strings here (only error messages show them): this runs for every
    read of a domain's state. The walk from ``/`` is made at most once a second per parent:
    in between, the parent is opened by the same path and kept only when it is the very
    directory the walk checked (its device and inode), whose owner and mode are checked
    again. A path that leads anywhere else, or an ancestor changed since (noticed within a
    second), is walked and checked anew."""
    absolute = os.path.abspath(path)
    dirname = os.path.dirname(absolute)
    fd = _open_checked_parent(dirname)
    if fd is None:
        fd = _walk_to_parent(dirname, create=create)
    try:
        return _open_dir(fd, os.path.basename(absolute), absolute, create=create)
    finally:
        os.close(fd)


def _open_checked_parent(dirname: str) -> int | None:
    """The parent ``dirname`` as walked lately (see :func:`_open_root`), or None."""
    known = _CHECKED_PARENTS.get(dirname)
    if known is None or time.monotonic() - known[2] > _CHECKED_FOR:
        return None
    try:  # symlinks followed: where the path leads is what is checked
        fd = os.open(dirname, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None
    info = os.fstat(fd)
    if (info.st_dev, info.st_ino) != known[:2]:
        os.close(fd)
        return None
    try:
        _check_ancestor(dirname, fd)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _walk_to_parent(dirname: str, *, create: bool) -> int:
    """Open ``dirname`` from ``/``, level by level, checking each directory on the way."""
    parent = os.path.realpath(dirname)
    fd = os.open("/", _DIR_FLAGS)
    try:
        walked = ""
        for part in parent.split("/")[1:] if parent != "/" else ():
            _check_ancestor(walked or "/", fd)
            walked = f"{walked}/{part}"
            if create:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o700, dir_fd=fd)
            try:
                next_fd = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                if isinstance(exc, FileNotFoundError):
                    raise
                raise StateError(f"cannot open {walked}: {exc.strerror}") from exc
            os.close(fd)
            fd = next_fd
        _check_ancestor(walked or "/", fd)
        info = os.fstat(fd)
    except BaseException:
        os.close(fd)
        raise
    _CHECKED_PARENTS[dirname] = (info.st_dev, info.st_ino, time.monotonic())
    return fd


def open_private_file(
    dir_fd: int, name: str, flags: int, path: Path, *, mode: int = 0o600
) -> int:
    """Open file ``name`` in the trusted directory ``dir_fd``: never through a symlink, and
    only a regular file of the current user that nobody else may write."""
    return _open_private(name, flags, path, mode=mode, dir_fd=dir_fd)[0]


def _open_private(
    name: str, flags: int, path: Path, *, mode: int = 0o600, dir_fd: int | None = None
) -> tuple[int, os.stat_result]:
    """:func:`open_private_file`, also returning the file's ``stat``."""
    try:
        fd = os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY, mode, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise StateError(f"refusing {path}: it is a symlink") from None
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise StateError(f"refusing {path}: it is not a regular file")
        refusal = _refusal(path, info, "file")
        if refusal is not None:
            raise refusal
    except BaseException:
        os.close(fd)
        raise
    return fd, info


_temp_names = itertools.count()


def _write_at(dir_fd: int, name: str, data: bytes, mode: int) -> os.stat_result:
    """Atomically replace ``name`` in directory ``dir_fd`` with ``data`` (see the module);
    returns the new file's ``stat``, taken from the file written (not from the name, which
    another writer may have replaced already)."""
    tmp = f".{name}.{os.getpid()}.{next(_temp_names)}"
    fd = os.open(
        tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode,
        dir_fd=dir_fd,
    )
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
            written = os.fstat(fd)
        finally:
            os.close(fd)
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise
    os.fsync(dir_fd)
    return written


def atomic_write(path: Path, data: bytes, mode: int = 0o600) -> os.stat_result:
    """Replace ``path`` with ``data`` so that no reader ever sees a partial file; returns
    the ``stat`` of the file written.

    The temporary file's name is unique to this process and call (pid and a counter), so
    concurrent writers never share one; plain ``os`` calls keep this cheap, since a running
    domain's status is written at every hot-plug step. The directory is opened without
    following a symlink; files inside the state root go through :meth:`StateRoot.write`.
    """
    dir_fd = os.open(path.parent, _DIR_FLAGS)
    try:
        return _write_at(dir_fd, path.name, data, mode)
    finally:
        os.close(dir_fd)


def open_append(path: Path) -> tuple[int, bool]:
    """Open the file ``path`` for appending (created 0600 when missing; only a regular file
    of ours, its directory opened without following a symlink as :func:`atomic_write`
    does): its fd, and whether it is new (empty), whose name then still has to be made
    durable (:func:`sync_directory`) before what is appended can be."""
    dir_fd = os.open(path.parent, _DIR_FLAGS)
    try:
        fd, info = _open_private(
            path.name, os.O_WRONLY | os.O_APPEND | os.O_CREAT, path, dir_fd=dir_fd
        )
    finally:
        os.close(dir_fd)
    return fd, info.st_size == 0


def append_to(fd: int, data: bytes) -> os.stat_result:
    """Append ``data`` to the file open as ``fd`` (:func:`open_append`); returns the file's
    ``stat`` after the write (which :func:`sync_file` makes durable)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    return os.fstat(fd)


def sync_file(fd: int) -> None:
    """Return once what was written to the file open as ``fd`` is on disk (its data and
    size: ``fdatasync``)."""
    os.fdatasync(fd)


def sync_directory(path: Path) -> None:
    """Make the names in directory ``path`` durable (``fsync``)."""
    dir_fd = os.open(path, _DIR_FLAGS)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _qemu_lives(dir_fd: int, status: bytes | None) -> bool:
    """Whether a QEMU may still serve this domain: the status file's process runs, or
    something still answers on its first monitor socket."""
    with contextlib.suppress(ValueError, TypeError, KeyError, AttributeError):
        data = json.loads(status or b"")
        identity = ProcessIdentity(int(data["pid"]), int(data["start_time"]))
        if is_alive(identity):
            return True
    try:
        info = os.stat("qmp.sock", dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    if not stat.S_ISSOCK(info.st_mode):
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(f"/proc/self/fd/{dir_fd}/qmp.sock")
        except OSError:
            return False
    return True


def _unlink_at(fd: int, name: str) -> None:
    """Unlink ``name`` in the directory ``fd``; one already gone is fine."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(name, dir_fd=fd)


def _rmdir_at(parent: int, name: str) -> bool:
    """Remove the empty directory ``name`` under ``parent``: False when it is not empty,
    True when it is gone (also when it was already)."""
    try:
        os.rmdir(name, dir_fd=parent)
    except FileNotFoundError:
        return True
    except OSError as exc:
        if exc.errno != errno.ENOTEMPTY:
            raise
        return False
    return True


class DirectoryGone(StateError):
    """A domain's state directory does not exist, or was removed while this process waited
    for its lock (its lock file is then no longer linked)."""


class DomainDir:
    """One domain's state directory: paths, the status file, and the per-domain lock.

    Every method that touches the disk first opens the directory through the root (see the
    module), so a directory or file another user could have planted is refused.
    """

    def __init__(self, path: Path, root: StateRoot | None = None) -> None:
        self.path = path
        self.name = path.name
        self.root = root if root is not None else StateRoot(path.parent.parent)

    @functools.cached_property
    def qmp_socket(self) -> Path:
        """The first QMP monitor socket QEMU listens on."""
        return self.path / "qmp.sock"

    @property
    def qmp_sockets(self) -> list[Path]:
        """Every QMP monitor socket: QEMU serves one client on each, so a few qctl
        processes (say ``qctl events`` and ``qctl attach-device``) can work at once."""
        return [self.qmp_socket, *(self.path / f"qmp-{n}.sock" for n in range(1, MONITORS))]

    @functools.cached_property
    def status_file(self) -> Path:
        """The status file: live XML and ledger."""
        return self.path / "status.json"

    @functools.cached_property
    def journal_file(self) -> Path:
        """The status file's journal (:mod:`~qctl.qemu.journal`)."""
        return self.path / JOURNAL_NAME

    @property
    def log_file(self) -> Path:
        """QEMU's stderr."""
        return self.path / "qemu.log"

    @property
    def start_file(self) -> Path:
        """The intent of a ``start`` under way: written before QEMU is spawned, removed once
        the status file exists. Found alone, it marks a start that was cut short."""
        return self.path / "starting"

    @property
    def console_log(self) -> Path:
        """Everything the guest wrote on its first serial port (QEMU's chardev log)."""
        return self.path / "console.log"

    @property
    def pid_file(self) -> Path:
        """Where QEMU writes its pid (``-pidfile``)."""
        return self.path / "qemu.pid"

    @functools.cached_property
    def abort_file(self) -> Path:
        """Where another process asks the running job to abort (it holds the job's id)."""
        return self.path / "abort"

    @contextlib.contextmanager
    def opened(self, *, create: bool = False) -> Iterator[int]:
        """The directory as a checked fd (see the module); with ``create``, the root,
        ``domains`` and this directory are made (0700) when missing.

        :class:`DirectoryGone` ("no domain named …") when it does not exist and is not
        created.
        """
        try:
            with self.root.opened("domains", self.name, create=create) as fd:
                yield fd
        except FileNotFoundError:
            raise DirectoryGone(f"no domain named {self.name!r} is running") from None

    def make(self) -> None:
        """Create the directory (0700) and the root above it, if missing; check them."""
        with self.opened(create=True):
            pass

    def create(self) -> None:
        """Create the directory (0700); refuse when a status file shows it is in use."""
        with self.opened(create=True) as fd, contextlib.suppress(FileNotFoundError):
            os.stat("status.json", dir_fd=fd, follow_symlinks=False)
            raise StateError(f"domain {self.name!r} is already running (state in {self.path})")

    def write_status(self, status: dict[str, Any]) -> None:
        """Atomically replace the status file with ``status`` as JSON.

        A full disk is a :class:`StateError` saying so (the status file keeps its old content).
        """
        data = json.dumps(status, separators=(",", ":")).encode()
        with self.opened() as fd:
            try:
                _write_at(fd, "status.json", data, 0o600)
            except OSError as exc:
                if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise StateError(
                        f"no space left writing status of {self.name!r} ({self.status_file})"
                    ) from exc
                raise StateError(
                    f"cannot write status of {self.name!r} ({self.status_file}): {exc.strerror}"
                ) from exc

    def read_status_bytes(self) -> bytes:
        """The status file as it is on disk; StateError when missing or not trusted."""
        with self.opened() as fd:
            return self._read_status_at(fd)

    def _read_status_at(self, fd: int) -> bytes:
        data = self._read_at(fd, "status.json", self.status_file, "status file")
        if data is None:
            raise StateError(f"no domain named {self.name!r} is running")
        return data

    def _read_journal_at(self, fd: int) -> bytes:
        data = self._read_at(fd, JOURNAL_NAME, self.journal_file, "status journal")
        return b"" if data is None else data

    @staticmethod
    def _read_at(fd: int, name: str, path: Path, what: str) -> bytes | None:
        """File ``name`` of the directory ``fd``, trusted (see the module); None when
        missing."""
        try:
            file = open_private_file(fd, name, os.O_RDONLY, path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StateError(f"{what} {path} is unreadable: {exc.strerror}") from exc
        with os.fdopen(file, "rb") as handle:
            return handle.read()

    def read_status(self) -> dict[str, Any]:
        """The status file's content with its journal applied; StateError when missing,
        damaged or not trusted.

        The journal is read first: a status file rewritten after that holds its lines
        already, and they are then of another generation (see :mod:`~qctl.qemu.journal`).
        """
        with self.opened() as fd:
            journal = self._read_journal_at(fd)
            raw = self._read_status_at(fd)
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise StateError(f"status file {self.status_file} is unreadable: {exc}") from exc
        if not isinstance(data, dict):
            raise StateError(f"status file {self.status_file} is not a JSON object")
        try:
            merge(data, journal)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise StateError(f"status journal {self.journal_file} is damaged: {exc}") from exc
        return data

    def qemu_lives(self) -> bool:
        """Whether a QEMU may still run for this domain, judged without trusting the status
        file to be whole: the process it names (pid and start time) is alive, or something
        answers on the first monitor socket."""
        with self.opened() as fd:
            try:
                raw = self.read_status_bytes()
            except StateError:
                raw = None
            return _qemu_lives(fd, raw)

    def discard(self) -> None:
        """Remove this domain's state without releasing anything its ledger holds: the way
        out for a damaged status file. Refused while a QEMU may still run for it, and while
        another command holds the domain's lock (a start may be making it anew)."""
        lock = self.try_lock()
        if lock is None:
            raise StateError(
                f"another command is working on domain {self.name!r}: try again once it is done"
            )
        try:
            if self.qemu_lives():
                raise StateError(
                    f"a QEMU may still run for domain {self.name!r} (its process or its "
                    "monitor socket is alive): end it first"
                )
            self.remove()
        finally:
            lock.release()

    def remove(self) -> None:
        """Delete the directory and everything qctl puts in it (idempotent).

        The status file goes first: the caller has released its ledger, and a status file
        left by a removal cut short would have the next connect release it again (a device
        another domain may hold by then). The lock goes last. What a removal cut short
        leaves — qctl's own files, no status file, no intent — is removed by the next
        command on the name (:mod:`~qctl.qemu.orphan`). A directory a new start took
        meanwhile (it holds a new lock) is left to it; a file written meanwhile (a request
        to abort) is removed too, and anything else is left, with a warning.
        """
        try:
            with self.root.opened("domains") as parent, self.opened() as fd:
                for child in ["status.json", *self._own_files(fd), JOURNAL_NAME, "starting"]:
                    _unlink_at(fd, child)
                _unlink_at(fd, "lock")
                if _rmdir_at(parent, self.name):
                    return
                if "lock" in os.listdir(fd):
                    return  # a new start took the directory
                for child in self._own_files(fd):
                    _unlink_at(fd, child)
                if not _rmdir_at(parent, self.name):
                    log.warning("domain %s: %s is left: it holds %s", self.name, self.path,
                                ", ".join(sorted(os.listdir(fd))))
        except (DirectoryGone, FileNotFoundError):  # (the root or domains/ went too)
            return

    def _own_files(self, fd: int) -> list[str]:
        """What qctl puts in the directory, and finds there now, but the status file, its
        journal, the intent and the lock (:meth:`remove` orders those)."""
        last = {"status.json", JOURNAL_NAME, "starting", "lock"}
        return [n for n in os.listdir(fd) if self.is_own_file(n) and n not in last]

    def is_own_file(self, name: str) -> bool:
        """Whether ``name`` is one of the files qctl (or QEMU for it) puts in the
        directory: the books, the lock, monitors, logs, requests and temporary files."""
        return (
            name in _OWN_FILES
            or name.startswith(".")
            or any(name == p.name for p in self.qmp_sockets)
        )

    def listing(self) -> list[str]:
        """The names in the directory (:class:`StateError` when there is none)."""
        with self.opened() as fd:
            return os.listdir(fd)

    def lock_file_path(self) -> Path:
        """The file whose ``flock`` serializes jobs on this domain."""
        return self.path / "lock"

    def job_running(self) -> bool:
        """Whether a job holds the domain's lock now (in any process, this one included):
        a probe that takes nothing (a shared lock tried, and dropped at once)."""
        with self.opened() as fd:
            try:
                lock_fd = open_private_file(fd, "lock", os.O_RDONLY, self.lock_file_path())
            except FileNotFoundError:  # no job ever took it
                return False
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(lock_fd)  # (which drops the shared lock)
        return False

    async def lock(self) -> FileLock:
        """Take the domain's file lock, so two qctl processes never work on it at once.

        The directory must exist (:meth:`make`); a domain that does not run gets
        :class:`DirectoryGone` and nothing is created, and so does one whose directory was
        removed while this waited for the lock. Bound the wait with ``asyncio.timeout()``
        at the call site.
        """
        return self._linked(await _flock(self._open_lock()))

    def try_lock(self) -> FileLock | None:
        """:meth:`lock` if nobody holds it now, else None (never waits)."""
        lock_fd = self._open_lock()
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(lock_fd)
            return None
        except BaseException:
            os.close(lock_fd)
            raise
        return self._linked(FileLock(lock_fd))

    def _open_lock(self) -> int:
        with self.opened() as fd:
            try:
                return open_private_file(
                    fd, "lock", os.O_RDWR | os.O_CREAT, self.lock_file_path()
                )
            except FileNotFoundError:  # the directory went after it was opened
                raise DirectoryGone(f"no domain named {self.name!r} is running") from None

    def _linked(self, lock: FileLock) -> FileLock:
        """``lock``, unless its file was unlinked (the directory removed) before it was
        taken: then it is let go and :class:`DirectoryGone` raised."""
        try:
            removed = os.fstat(lock.fileno()).st_nlink == 0
        except BaseException:
            lock.release()
            raise
        if removed:
            lock.release()
            raise DirectoryGone(f"no domain named {self.name!r} is running")
        return lock


def _parts(folder: str) -> tuple[str, ...]:
    return (folder,) if folder else ()


async def _flock(fd: int) -> FileLock:
    """Take an exclusive ``flock`` on the open file ``fd`` (closed on failure)."""
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return FileLock(fd)
            except BlockingIOError:
                await asyncio.sleep(0.05)
    except BaseException:
        os.close(fd)
        raise


async def lock_file(path: Path) -> FileLock:
    """Take an exclusive ``flock`` on ``path`` (created 0600 if missing, never through a
    symlink).

    ``flock`` is tried without blocking and retried after short sleeps, so the event loop
    never blocks and cancellation is immediate; bound the wait at the call site.
    """
    return await _flock(os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600))


class HeldOpenLock:
    """A file lock whose file stays open between uses: ``flock``/unlock per job, no
    ``open``/``close`` (a domain handle takes its lock at every hot-plug)."""

    def __init__(self, path: Path) -> None:
        self._fd: int | None = os.open(
            path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600
        )

    async def acquire(self) -> None:
        """Take the lock, retrying without blocking the event loop; bound the wait at the
        call site. :class:`StateError` once the lock was closed."""
        if self._fd is None:
            raise StateError("the lock was closed")
        while True:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                await asyncio.sleep(0.05)

    def try_acquire(self) -> bool:
        """Take the lock if it is free; False at once when someone holds it."""
        if self._fd is None:
            raise StateError("the lock was closed")
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def release(self) -> None:
        """Let the lock go (the file stays open for the next :meth:`acquire`)."""
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        """Close the file (idempotent); releases the lock if held."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class FileLock:
    """A held ``flock``; :meth:`release` (idempotent) closes its fd, which releases it."""

    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd

    def release(self) -> None:
        """Release the lock."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def fileno(self) -> int:
        """The fd holding the lock (:class:`ValueError` once released)."""
        if self._fd is None:
            raise ValueError("the lock was released")
        return self._fd


class StateRoot:
    """The folder holding every running domain's state directory (and the network pools)."""

    def __init__(self, path: Path | str | None = None) -> None:
        self.path = Path(path) if path is not None else default_state_root()

    def domain(self, name: str) -> DomainDir:
        """The state directory of domain ``name`` (not created)."""
        if not is_object_name(name):
            raise StateError(
                f"domain name {name!r} is not usable as a state directory name "
                f"({OBJECT_NAME_RULE})"
            )
        return DomainDir(self.path / "domains" / name, self)

    @contextlib.contextmanager
    def opened(self, *parts: str, create: bool = False) -> Iterator[int]:
        """The directory ``ROOT/parts…`` as an fd, each level opened from the one above
        without following symlinks and checked (see the module). With ``create``, missing
        levels are made 0700. FileNotFoundError when a level is missing; StateError when
        one may not be trusted."""
        fd = _open_root(self.path, create=create)
        try:
            where = str(self.path)
            for part in parts:
                where = f"{where}/{part}"
                next_fd = _open_dir(fd, part, where, create=create)
                os.close(fd)
                fd = next_fd
            yield fd
        finally:
            os.close(fd)

    def ensure(self) -> None:
        """Create the root and its ``domains`` folder, 0700 (check them when they exist)."""
        with self.opened("domains", create=True):
            pass

    def read(self, folder: str, name: str) -> bytes | None:
        """The content of ``ROOT/folder/name``, or None when it does not exist."""
        try:
            with self.opened(*_parts(folder)) as fd:
                file = open_private_file(fd, name, os.O_RDONLY, self.path / folder / name)
        except FileNotFoundError:
            return None
        with os.fdopen(file, "rb") as handle:
            return handle.read()

    def write(self, folder: str, name: str, data: bytes, mode: int = 0o600) -> None:
        """Atomically replace ``ROOT/folder/name`` (the folder made 0700 when missing)."""
        with self.opened(*_parts(folder), create=True) as fd:
            _write_at(fd, name, data, mode)

    def listdir(self, folder: str) -> list[str]:
        """The entries of ``ROOT/folder`` (none when it does not exist)."""
        try:
            with self.opened(*_parts(folder)) as fd:
                return os.listdir(fd)
        except FileNotFoundError:
            return []

    async def lock(self, folder: str, name: str) -> FileLock:
        """An exclusive ``flock`` on ``ROOT/folder/name`` (see :func:`lock_file`); ``folder``
        '' is the root itself. Made 0700 where missing."""
        with self.opened(*_parts(folder), create=True) as fd:
            lock_fd = open_private_file(fd, name, os.O_RDWR | os.O_CREAT, self.path / folder / name)
        return await _flock(lock_fd)

    @contextlib.contextmanager
    def locked(self, folder: str, name: str) -> Iterator[None]:
        """Hold the ``flock`` of ``ROOT/folder/name`` for a short synchronous step (it blocks
        the thread while another process holds it)."""
        with self.opened(*_parts(folder), create=True) as fd:
            lock_fd = open_private_file(fd, name, os.O_RDWR | os.O_CREAT, self.path / folder / name)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(lock_fd)

    def unlink(self, folder: str, name: str) -> None:
        """Delete ``ROOT/folder/name`` if it exists."""
        try:
            with self.opened(*_parts(folder)) as fd:
                os.unlink(name, dir_fd=fd)
        except FileNotFoundError:
            pass

    def starting(self) -> list[str]:
        """Names of domain directories without a status file (a start under way, or one cut
        short: :func:`~qctl.qemu.orphan.cut_short` tells which), sorted."""
        try:
            with self.opened("domains") as fd:
                found = []
                for name in os.listdir(fd):
                    if not is_object_name(name):
                        continue
                    with contextlib.suppress(OSError):  # (not a directory: not a domain)
                        try:
                            os.stat(f"{name}/status.json", dir_fd=fd, follow_symlinks=False)
                        except FileNotFoundError:
                            found.append(name)
                return sorted(found)
        except FileNotFoundError:
            return []

    def names(self) -> list[str]:
        """Names of domains that have a status file, sorted."""
        try:
            with self.opened("domains") as fd:
                found = []
                for name in os.listdir(fd):
                    with contextlib.suppress(OSError):
                        info = os.stat(f"{name}/status.json", dir_fd=fd, follow_symlinks=False)
                        if stat.S_ISREG(info.st_mode) and is_object_name(name):
                            found.append(name)
                return sorted(found)
        except FileNotFoundError:
            return []
