"""Which kind of file system holds a path: one that keeps its files in memory, or not.

A status file on tmpfs is a copy in memory: writing it never waits on a device, and costs
less than handing the write to a thread (about 50 µs against 0.3-0.5 ms of thread hand-off
on a busy event loop). Elsewhere a write with its fsync may wait on a disk, and goes to a
thread (see :mod:`qctl.qemu.writer`).
"""

from __future__ import annotations

import ctypes
import functools
import os

__all__ = ["in_memory", "sync_file_system"]

#: ``f_type`` of the file systems that keep files in memory (linux/magic.h)
_MEMORY_MAGIC = frozenset({0x01021994, 0x858458F6})  # TMPFS_MAGIC, RAMFS_MAGIC
#: room for ``struct statfs`` (120 bytes on 64-bit Linux, 84 on 32-bit); ``f_type``, a
#: ``long``, comes first
_STATFS_ROOM = 256


def in_memory(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` (which must exist) is on tmpfs or ramfs; OSError as statfs(2) gives."""
    buffer = ctypes.create_string_buffer(_STATFS_ROOM)
    if _libc().statfs(os.fsencode(path), buffer) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), os.fspath(path))
    return ctypes.c_ulong.from_buffer(buffer).value & 0xFFFFFFFF in _MEMORY_MAGIC


def sync_file_system(fd: int) -> None:
    """Make everything written to the file system that holds the file open as ``fd``
    durable (syncfs(2)). It reports a write-back error of that file system that came after
    ``fd`` was opened (Linux 5.8 and later), so open ``fd`` before the writes it covers."""
    if _libc().syncfs(fd) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)
