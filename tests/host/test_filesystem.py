"""in_memory: tmpfs and ramfs are told apart from every other file system by statfs(2)."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from qctl.host import in_memory


def test_dev_shm_is_in_memory_and_proc_is_not() -> None:
    assert in_memory("/dev/shm")  # tmpfs on every Linux host
    assert not in_memory(Path("/proc"))


def test_a_missing_path_is_an_os_error() -> None:
    with pytest.raises(OSError) as info:
        in_memory("/nonexistent/qctl")
    assert info.value.errno == errno.ENOENT
