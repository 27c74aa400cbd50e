"""Where the bundled test guest is (built by scripts/build-guest) and whether it may be skipped.

The guest lives in ``$QCTL_GUEST_DIR`` or ``<repo>/.cache/guest``. A missing guest skips the
tests that need it, except under CI (env ``CI`` set), where it fails them: CI must build it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import NoReturn

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
QEMU_BINARY = "qemu-system-x86_64"


def guest_dir() -> Path:
    """The directory scripts/build-guest writes to."""
    env = os.environ.get("QCTL_GUEST_DIR")
    return Path(env) if env else REPO_ROOT / ".cache" / "guest"


def _missing(what: str) -> NoReturn:
    """Skip for a missing prerequisite, or fail under CI."""
    if os.environ.get("CI"):
        pytest.fail(f"{what} (CI is set, so this is a failure, not a skip)")
    pytest.skip(what)


@pytest.fixture
def guest_paths() -> tuple[Path, Path]:
    """(kernel, initrd) of the bundled guest: the stock bzImage and the initramfs."""
    base = guest_dir()
    kernel, initrd = base / "vmlinuz", base / "initrd.img"
    absent = [p.name for p in (kernel, initrd) if not p.is_file()]
    if absent:
        _missing(
            f"test guest not built: no {', '.join(absent)} in {base} (run scripts/build-guest)"
        )
    return kernel, initrd


@pytest.fixture
def guest_pvh_kernel(guest_paths: tuple[Path, Path]) -> Path:
    """The uncompressed PVH kernel (vmlinux): boots ~3 s faster under TCG than vmlinuz.

    Optional output of scripts/build-guest (only for kernels with a PVH entry point), so its
    absence is a skip even under CI.
    """
    path = guest_paths[0].parent / "vmlinux"
    if not path.is_file():
        pytest.skip(f"no PVH kernel {path} (this kernel has no PVH entry point)")
    return path


@pytest.fixture
def qemu_binary() -> str:
    """Path of qemu-system-x86_64."""
    path = shutil.which(QEMU_BINARY)
    if path is None:
        _missing(f"{QEMU_BINARY} not found (install qemu-system-x86)")
    return path
