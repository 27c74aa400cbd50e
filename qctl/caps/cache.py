"""The on-disk capabilities cache: one JSON file per QEMU binary, checked by a fingerprint.

Entries live in ``$XDG_CACHE_HOME/qctl/caps/`` (``~/.cache/qctl/caps/`` by default), named
by the SHA-256 of the binary's real path. Each stores the caps and the
:class:`Fingerprint` they were probed under; an entry is used only while the fingerprint
still matches, that is while the binary's identity (device, inode), mtime, ctime and size,
qctl's version, the running kernel and the presence of ``/dev/kvm`` are all unchanged. Host
facts (:mod:`~qctl.caps.hostfact`) are not cached: every lookup finds them afresh.

Within one process every lookup shares one :class:`QEMUCaps` object per entry (a domain
holds its caps, so dozens of domains would otherwise hold dozens of copies): a process-wide
memo keeps the caps last read or probed for each entry file, with the fingerprint and the
entry file's own stamp (inode, size, mtime) they belong to. A lookup whose fingerprint and
stamp are unchanged returns the very same object without reading the file, whichever
:class:`CapsCache` object it goes through; another process rewriting the entry changes the
stamp, and the entry is read again. qctl's version and the kernel, the inputs of the
fingerprint that cannot change while the process runs, are read once per process.

Writes are atomic (temporary file in the same directory, fsync, rename), so processes
sharing the cache never see half an entry; the last writer wins. Within one process (one
event loop), concurrent lookups of the same binary in the same cache directory share a single
probe, whichever :class:`CapsCache` objects they go through.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import hashlib
import json
import logging
import os
import tempfile
import weakref
from collections.abc import Iterable
from pathlib import Path

from qctl.caps.hostfact import TUN_PATH, VHOST_NET_PATH, host_facts
from qctl.caps.model import HostFacts, QEMUCaps
from qctl.caps.probe import PROBE_TIMEOUT, probe, resolve_binary
from qctl.errors import ProcessError, QctlError
from qctl.record import record
from qctl.version import __version__

__all__ = ["CACHE_FORMAT", "CapsCache", "Fingerprint", "default_cache_dir", "probe_many"]

_log = logging.getLogger(__name__)

# Bumped when the entry layout changes; entries of another format are ignored.
CACHE_FORMAT = 2
KVM_PATH = "/dev/kvm"


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/qctl/caps``, or ``~/.cache/qctl/caps`` (a relative
    ``XDG_CACHE_HOME`` is ignored, as the XDG spec says)."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    root = Path(base) if os.path.isabs(base) else Path.home() / ".cache"
    return root / "qctl" / "caps"


@record
class Fingerprint:
    """What must not have changed for a cache entry to stay valid."""

    binary: str
    device: int
    inode: int
    mtime_ns: int
    ctime_ns: int
    size: int
    qctl_version: str
    kernel: str
    kvm: bool


@record(frozen=False)
class _Shared:
    """One probe in flight and how many lookups wait for it."""

    task: asyncio.Task[QEMUCaps]
    fingerprint: Fingerprint
    waiters: int = 0


@record
class _Memo:
    """The caps this process last read or probed for one entry file, and what they hold for."""

    fingerprint: Fingerprint
    stamp: tuple[int, int, int, int] | None  # the entry file's; None when there was none
    caps: QEMUCaps


# The caps every lookup of this process shares, by cache entry file (see the module).
_MEMO: dict[Path, _Memo] = {}

# Probes in flight, per event loop, by cache entry file.
_IN_FLIGHT: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[Path, _Shared]] = (
    weakref.WeakKeyDictionary()
)


class CapsCache:
    """Cached capabilities of QEMU binaries; ``await cache.get(binary)``.

    ``directory`` defaults to :func:`default_cache_dir`; ``timeout`` bounds each probe.
    The other parameters replace what the fingerprint and host facts would otherwise read
    from this host (qctl's installed version, ``os.uname()``, device node paths), for tests.
    Instances are cheap: concurrent lookups share probes across them (the first lookup's
    timeout then applies to all).
    """

    def __init__(
        self,
        directory: str | os.PathLike[str] | None = None,
        *,
        timeout: float = PROBE_TIMEOUT,
        qctl_version: str | None = None,
        kernel: str | None = None,
        kvm_path: str = KVM_PATH,
        vhost_net_path: str = VHOST_NET_PATH,
        tun_path: str = TUN_PATH,
    ) -> None:
        self.directory = Path(directory) if directory is not None else default_cache_dir()
        self.timeout = timeout
        self._qctl_version = qctl_version if qctl_version is not None else __version__
        self._kernel = kernel if kernel is not None else _running_kernel()
        self._kvm_path = kvm_path
        self._vhost_net_path = vhost_net_path
        self._tun_path = tun_path

    def __repr__(self) -> str:
        return f"<CapsCache {self.directory}>"

    def fingerprint(self, binary: str | os.PathLike[str]) -> Fingerprint:
        """The fingerprint ``binary`` has now.

        :raise ProcessError: when there is no such binary.
        """
        path = resolve_binary(binary)
        try:
            st = os.stat(path)
        except OSError as exc:
            raise ProcessError(f"{path}: {exc.strerror or exc}") from exc
        return Fingerprint(
            binary=path,
            device=st.st_dev,
            inode=st.st_ino,
            mtime_ns=st.st_mtime_ns,
            ctime_ns=st.st_ctime_ns,
            size=st.st_size,
            qctl_version=self._qctl_version,
            kernel=self._kernel,
            kvm=os.path.exists(self._kvm_path),
        )

    def entry_path(self, binary: str | os.PathLike[str]) -> Path:
        """The cache file for ``binary`` (which need not exist)."""
        return self._entry_file(resolve_binary(binary))

    def _entry_file(self, real_path: str) -> Path:
        return self.directory / f"{hashlib.sha256(real_path.encode()).hexdigest()}.json"

    async def get(self, binary: str | os.PathLike[str], *, refresh: bool = False) -> QEMUCaps:
        """The caps of ``binary``: from the cache while valid, else probed (and stored).

        Lookups of an unchanged binary return the same object for as long as the process
        runs (see the module). ``refresh`` skips the cached entry. Errors are those of
        :func:`~qctl.caps.probe.probe`; failing to write the cache is only logged.
        """
        fingerprint = self.fingerprint(binary)
        key = self._entry_file(fingerprint.binary)
        if not refresh:
            cached = self._recall(key, fingerprint) or self._load(key, fingerprint)
            if cached is not None:
                return self._with_fresh_host(key, cached)
        return self._with_fresh_host(key, await self._join(fingerprint))

    def _recall(self, key: Path, fingerprint: Fingerprint) -> QEMUCaps | None:
        """The shared caps of this entry, while neither the binary nor the entry changed."""
        memo = _MEMO.get(key)
        if memo is None or memo.fingerprint != fingerprint or memo.stamp != _stamp_of(key):
            return None
        return memo.caps

    def _with_fresh_host(self, key: Path, caps: QEMUCaps) -> QEMUCaps:
        """``caps`` with this lookup's host facts; a change of them is shared from then on."""
        facts = self._host_facts()
        if caps.host == facts:
            return caps
        fresh = dataclasses.replace(caps, host=facts)
        memo = _MEMO.get(key)
        if memo is not None and memo.caps is caps:
            _MEMO[key] = dataclasses.replace(memo, caps=fresh)
        return fresh

    def cached(self, binary: str | os.PathLike[str]) -> QEMUCaps | None:
        """The caps of ``binary`` if the cache holds a valid entry, else None; never runs it.

        :raise ProcessError: when there is no such binary.
        """
        fingerprint = self.fingerprint(binary)
        key = self._entry_file(fingerprint.binary)
        cached = self._recall(key, fingerprint) or self._load(key, fingerprint)
        return None if cached is None else self._with_fresh_host(key, cached)

    def _host_facts(self) -> HostFacts:
        return host_facts(vhost_net_path=self._vhost_net_path, tun_path=self._tun_path)

    def _load(self, path: Path, fingerprint: Fingerprint) -> QEMUCaps | None:
        """The caps of entry file ``path`` if it exists, is whole and matches ``fingerprint``
        (remembered for the lookups that follow)."""
        try:
            with open(path, "rb") as entry_file:
                stamp = _stamp(os.fstat(entry_file.fileno()))
                raw = entry_file.read()
        except FileNotFoundError:
            return None
        except OSError as exc:
            _log.warning("cannot read the capabilities cache %s: %s", path, exc.strerror or exc)
            return None
        try:
            entry = json.loads(raw)
            if entry["format"] != CACHE_FORMAT:
                return None
            if entry["fingerprint"] != dataclasses.asdict(fingerprint):
                return None
            data = entry["caps"]
            facts = self._host_facts()  # host facts are always fresh
            data["host"] = {"vhost_net": facts.vhost_net, "tun": facts.tun}
            caps = QEMUCaps.from_dict(data)
        except (ValueError, KeyError, TypeError) as exc:
            _log.debug("ignoring damaged capabilities cache entry %s: %s", path, exc)
            return None
        _MEMO[path] = _Memo(fingerprint, stamp, caps)
        return caps

    async def _join(self, fingerprint: Fingerprint) -> QEMUCaps:
        """Wait for the probe of this binary in flight, starting one if there is none.

        A lookup that is cancelled leaves the probe to the others waiting; the last one
        cancelled cancels the probe (which then stops QEMU and cleans up).
        """
        in_flight = _IN_FLIGHT.setdefault(asyncio.get_running_loop(), {})
        key = self._entry_file(fingerprint.binary)
        shared = in_flight.get(key)
        if shared is None or shared.fingerprint != fingerprint:
            task = asyncio.create_task(self._probe_and_store(fingerprint), name=f"probe {key}")
            shared = in_flight[key] = _Shared(task, fingerprint)
            task.add_done_callback(functools.partial(_forget, in_flight, key, shared))
        shared.waiters += 1
        try:
            caps = await asyncio.shield(shared.task)
        except asyncio.CancelledError:
            if shared.waiters == 1 and not shared.task.done():
                shared.task.cancel()
                await asyncio.wait((shared.task,))
            raise
        finally:
            shared.waiters -= 1
        return caps

    async def _probe_and_store(self, fingerprint: Fingerprint) -> QEMUCaps:
        caps = await probe(fingerprint.binary, timeout=self.timeout, host=self._host_facts())
        try:
            await asyncio.to_thread(self._store, fingerprint, caps)
        except OSError as exc:
            _log.warning(
                "cannot write the capabilities cache in %s: %s", self.directory, exc.strerror or exc
            )
        key = self._entry_file(fingerprint.binary)
        _MEMO[key] = _Memo(fingerprint, _stamp_of(key), caps)
        return caps

    def _store(self, fingerprint: Fingerprint, caps: QEMUCaps) -> None:
        """Write the entry atomically: temporary file, fsync, rename over the old one."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        entry = {
            "format": CACHE_FORMAT,
            "fingerprint": dataclasses.asdict(fingerprint),
            "caps": caps.to_dict(),
        }
        fd, temporary = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=self.directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(entry, out, separators=(",", ":"))
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, self._entry_file(fingerprint.binary))
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise


def _forget(in_flight: dict[Path, _Shared], key: Path, done: _Shared, _task: object) -> None:
    """Drop a finished probe from the in-flight table (unless a newer one replaced it)."""
    if in_flight.get(key) is done:
        del in_flight[key]


async def probe_many(
    binaries: Iterable[str | os.PathLike[str]], *, cache: CapsCache | None = None
) -> dict[str, QEMUCaps | QctlError]:
    """Probe several binaries in parallel, through ``cache`` when given.

    Returns each binary (as given) with its caps, or with the typed error its probe ended
    in: one broken binary does not hide the others.
    """

    async def one(binary: str) -> QEMUCaps | QctlError:
        try:
            return await (cache.get(binary) if cache is not None else probe(binary))
        except QctlError as exc:
            return exc

    names = dict.fromkeys(os.fspath(b) for b in binaries)
    async with asyncio.TaskGroup() as group:
        tasks = {name: group.create_task(one(name)) for name in names}
    return {name: task.result() for name, task in tasks.items()}


def _stamp(st: os.stat_result) -> tuple[int, int, int, int]:
    """What changes whenever an entry file is rewritten (a rename brings a new inode)."""
    return st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def _stamp_of(path: Path) -> tuple[int, int, int, int] | None:
    """The stamp of the entry file at ``path``; ``None`` when it cannot be read."""
    try:
        return _stamp(os.stat(path))
    except OSError:
        return None


@functools.cache
def _running_kernel() -> str:
    uname = os.uname()
    return f"{uname.release} {uname.version}"
