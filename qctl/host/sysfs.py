"""The sysfs seam: where sysfs is, and who writes to it.

Every read and write of ``/sys`` made by the host layer goes through one :class:`Sysfs`
value, so tests (and hosts without the hardware) can point it at a fake tree and give it a
writer that plays the kernel's part. Reads are plain file and symlink reads under
:attr:`Sysfs.root`; writes go through :attr:`Sysfs.writer`, a :class:`SysfsWriter`, because
writing ``unbind`` or ``drivers_probe`` makes the *kernel* change other files (the ``driver``
link), which a fake tree cannot do by itself.

Failures become :class:`qctl.errors.SysfsError` naming the file and the errno, e.g.
``cannot write 0000:03:10.0 to /sys/bus/pci/drivers/ixgbevf/unbind: No such device (ENODEV)``.
"""

from __future__ import annotations

import os
from dataclasses import field
from pathlib import Path
from typing import Protocol

from qctl.record import record

from ..errors import SysfsError
from .oserror import errno_text

__all__ = ["SYSFS_ROOT", "KernelSysfsWriter", "Sysfs", "SysfsWriter"]

SYSFS_ROOT = Path("/sys")
"""Where the kernel mounts sysfs."""


class SysfsWriter(Protocol):
    """Writes one string to one sysfs attribute, raising :class:`OSError` like ``write(2)``."""

    def write(self, path: Path, data: str) -> None:
        """Write ``data`` to the attribute at ``path`` in a single ``write(2)``."""
        ...


class KernelSysfsWriter:
    """The real writer: ``open(O_WRONLY)`` and one ``write(2)``, as sysfs expects.

    No ``O_CREAT``/``O_TRUNC``: sysfs attributes exist or they do not, and a write that the
    kernel accepts only in part is reported as ``EIO`` (sysfs stores take the whole buffer).
    """

    def write(self, path: Path, data: str) -> None:
        raw = data.encode()
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            written = os.write(fd, raw)
        finally:
            os.close(fd)
        if written != len(raw):
            raise OSError(5, f"short write ({written} of {len(raw)} bytes)", str(path))


@record
class Sysfs:
    """A sysfs tree: its ``root`` (``/sys``) and the ``writer`` that changes it.

    Reads never raise for a *missing* file where absence has a meaning (``read_optional``,
    ``link_name``); every other failure is a :class:`SysfsError` carrying the path.
    """

    root: Path = SYSFS_ROOT
    writer: SysfsWriter = field(default_factory=KernelSysfsWriter)

    def path(self, *parts: str) -> Path:
        """``root/parts…``."""
        return self.root.joinpath(*parts)

    def read(self, path: Path) -> str:
        """The text of ``path`` without its trailing newline."""
        try:
            return path.read_text().rstrip("\n")
        except OSError as exc:
            raise SysfsError(
                f"cannot read {path}: {errno_text(exc.errno, exc.strerror)}", path=str(path)
            ) from exc

    def read_optional(self, path: Path) -> str | None:
        """Like :meth:`read`, but ``None`` when ``path`` does not exist."""
        try:
            return path.read_text().rstrip("\n")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise SysfsError(
                f"cannot read {path}: {errno_text(exc.errno, exc.strerror)}", path=str(path)
            ) from exc

    def read_bytes(self, path: Path, size: int) -> bytes | None:
        """Up to ``size`` bytes of ``path``; ``None`` when it is missing or unreadable.

        For PCI ``config``, which unprivileged readers see truncated to 64 bytes and which
        some sandboxes hide: callers fall back on other attributes.
        """
        try:
            with path.open("rb") as file:
                return file.read(size)
        except OSError:
            return None

    def link_name(self, path: Path) -> str | None:
        """The last component of the symlink ``path``'s target; ``None`` when it is absent."""
        try:
            return os.path.basename(os.readlink(path))
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise SysfsError(
                f"cannot read link {path}: {errno_text(exc.errno, exc.strerror)}",
                path=str(path),
            ) from exc

    def list_dir(self, path: Path) -> list[str]:
        """The sorted entries of directory ``path``; empty when it does not exist."""
        try:
            return sorted(os.listdir(path))
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise SysfsError(
                f"cannot list {path}: {errno_text(exc.errno, exc.strerror)}", path=str(path)
            ) from exc

    def write(self, path: Path, data: str) -> None:
        """Write ``data`` to ``path`` through :attr:`writer`."""
        try:
            self.writer.write(path, data)
        except OSError as exc:
            shown = data.strip() or "an empty line"
            raise SysfsError(
                f"cannot write {shown} to {path}: {errno_text(exc.errno, exc.strerror)}",
                path=str(path),
            ) from exc
