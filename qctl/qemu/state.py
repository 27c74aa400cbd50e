"""Where a running domain's state lives on disk, and how it is written safely.

Layout under the state root (``--state-dir``, ``$QCTL_STATE_DIR``, ``/run/qctl`` for root,
``$XDG_RUNTIME_DIR/qctl`` otherwise)::

    ROOT/                      0700
      domains/NAME/            0700, one per running domain
        qmp.sock, qmp-N.sock   0600, QEMU's monitors (one client each)
        status.json            live XML + ledger, written atomically
        qemu.log               QEMU's stderr
        console.sock           the serial console's socket (QEMU listens; input)
        console.log            everything the guest wrote on its serial console
        lock                   flock()ed by the process working on the domain

Writes go to a temporary file in the same directory, are fsynced, then renamed over the
old file and the directory fsynced, so a reader (or a crash) only ever sees a whole file.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import itertools
import json
import os
import re
from pathlib import Path
from typing import Any

from qctl.errors import StateError

__all__ = [
    "DomainDir",
    "FileLock",
    "HeldOpenLock",
    "StateRoot",
    "atomic_write",
    "default_state_root",
    "lock_file",
]

#: QMP monitors per domain (see :attr:`DomainDir.qmp_sockets`)
MONITORS = 3

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$")


def default_state_root(env: dict[str, str] | None = None) -> Path:
    """The state root: ``$QCTL_STATE_DIR``, else /run/qctl for root, else the XDG runtime dir."""
    env = dict(os.environ) if env is None else env
    if env.get("QCTL_STATE_DIR"):
        return Path(env["QCTL_STATE_DIR"])
    if os.geteuid() == 0:
        return Path("/run/qctl")
    runtime = env.get("XDG_RUNTIME_DIR") or f"/run/user/{os.geteuid()}"
    return Path(runtime) / "qctl"


_temp_names = itertools.count()


def atomic_write(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` so that no reader ever sees a partial file.

    The temporary file's name is unique to this process and call (pid and a counter), so
    concurrent writers never share one; plain ``os`` calls keep this cheap, since a running
    domain's status is written at every hot-plug step.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{next(_temp_names)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _make_private_dir(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)


class DomainDir:
    """One domain's state directory: paths, the status file, and the per-domain lock."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.name = path.name

    @property
    def qmp_socket(self) -> Path:
        """The first QMP monitor socket QEMU listens on."""
        return self.path / "qmp.sock"

    @property
    def qmp_sockets(self) -> list[Path]:
        """Every QMP monitor socket: QEMU serves one client on each, so a few qctl
        processes (say ``qctl events`` and ``qctl attach-device``) can work at once."""
        return [self.qmp_socket, *(self.path / f"qmp-{n}.sock" for n in range(1, MONITORS))]

    @property
    def status_file(self) -> Path:
        """The status file: live XML and ledger."""
        return self.path / "status.json"

    @property
    def log_file(self) -> Path:
        """QEMU's stderr."""
        return self.path / "qemu.log"

    @property
    def console_socket(self) -> Path:
        """The serial console's UNIX socket (QEMU listens, one client at a time)."""
        return self.path / "console.sock"

    @property
    def console_log(self) -> Path:
        """Everything the guest wrote on its serial console (QEMU's chardev log)."""
        return self.path / "console.log"

    def create(self) -> None:
        """Create the directory (0700); refuse when a status file shows it is in use."""
        if self.status_file.exists():
            raise StateError(f"domain {self.name!r} is already running (state in {self.path})")
        _make_private_dir(self.path)

    def write_status(self, status: dict[str, Any]) -> None:
        """Atomically replace the status file with ``status`` as JSON."""
        atomic_write(self.status_file, json.dumps(status, separators=(",", ":")).encode())

    def read_status(self) -> dict[str, Any]:
        """The status file's content; StateError when missing or damaged."""
        try:
            data = json.loads(self.status_file.read_bytes())
        except FileNotFoundError:
            raise StateError(f"no domain named {self.name!r} is running") from None
        except (OSError, ValueError) as exc:
            raise StateError(f"status file {self.status_file} is unreadable: {exc}") from exc
        if not isinstance(data, dict):
            raise StateError(f"status file {self.status_file} is not a JSON object")
        return data

    def remove(self) -> None:
        """Delete the directory and everything in it (idempotent)."""
        files = (self.status_file, *self.qmp_sockets, self.log_file, self.path / "lock")
        for child in (*files, self.console_socket, self.console_log):
            with contextlib.suppress(FileNotFoundError):
                child.unlink()
        for leftover in self.path.glob(".*"):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()
        with contextlib.suppress(FileNotFoundError):
            self.path.rmdir()

    def lock_file_path(self) -> Path:
        """The file whose ``flock`` serializes jobs on this domain."""
        return self.path / "lock"

    async def lock(self) -> FileLock:
        """Take the domain's file lock, so two qctl processes never work on it at once.

        Bound the wait with ``asyncio.timeout()`` at the call site.
        """
        if not self.path.is_dir():
            _make_private_dir(self.path)
        return await lock_file(self.lock_file_path())


async def lock_file(path: Path) -> FileLock:
    """Take an exclusive ``flock`` on ``path`` (created 0600 if missing).

    ``flock`` is tried without blocking and retried after short sleeps, so the event loop
    never blocks and cancellation is immediate; bound the wait at the call site.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
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


class HeldOpenLock:
    """A file lock whose file stays open between uses: ``flock``/unlock per job, no
    ``open``/``close`` (a domain handle takes its lock at every hot-plug)."""

    def __init__(self, path: Path) -> None:
        self._fd: int | None = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)

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


class StateRoot:
    """The folder holding every running domain's state directory."""

    def __init__(self, path: Path | str | None = None) -> None:
        self.path = Path(path) if path is not None else default_state_root()

    def domain(self, name: str) -> DomainDir:
        """The state directory of domain ``name`` (not created)."""
        if not _NAME_RE.match(name):
            raise StateError(
                f"domain name {name!r} is not usable as a state directory name "
                "(letters, digits, '_', '.', '+', '-'; at most 64)"
            )
        return DomainDir(self.path / "domains" / name)

    def ensure(self) -> None:
        """Create the root and its ``domains`` folder, 0700."""
        _make_private_dir(self.path)
        _make_private_dir(self.path / "domains")

    def names(self) -> list[str]:
        """Names of domains that have a status file, sorted."""
        base = self.path / "domains"
        if not base.is_dir():
            return []
        return sorted(p.name for p in base.iterdir() if (p / "status.json").is_file())
