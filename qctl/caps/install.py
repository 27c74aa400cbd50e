"""Where a QEMU binary keeps its firmware and modules, when that is not where it was built to
look.

A distribution's QEMU in ``/usr/bin`` finds its ROMs (``/usr/share/qemu``, SeaBIOS, iPXE) and
its loadable modules (``/usr/lib/<multiarch>/qemu``) by paths compiled in. A QEMU unpacked
elsewhere (``dpkg -x`` of Debian's backports package into a cache folder, a build installed
under ``/opt``) may still look at those compiled-in paths, where it finds another QEMU's files
— wrong ROMs, and modules of another build, which make it abort. So for a binary outside the
system prefixes, its own tree is stated explicitly, laid out like the system's below the
binary's prefix (the folder above its ``bin``):

- each of ``PREFIX/share/qemu``, ``PREFIX/share/seabios`` and ``PREFIX/lib/ipxe/qemu`` that
  exists becomes a ``-L`` (QEMU searches them first, in that order, before its own paths);
- ``PREFIX/lib/<multiarch>/qemu``, if it exists, becomes ``QEMU_MODULE_DIR`` in its
  environment (QEMU searches it first; there is no command-line switch for it).

The probe and the driver both spawn QEMU through :func:`locate_install`, so a probed binary
and a started domain see the same files.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping
from pathlib import Path

from qctl.record import record

__all__ = ["QEMUInstall", "locate_install"]

# Prefixes whose QEMU finds its files by its compiled-in paths.
SYSTEM_PREFIXES = frozenset({Path("/usr"), Path("/usr/local")})
_DATA_DIRS = ("share/qemu", "share/seabios", "lib/ipxe/qemu")
MODULE_DIR_VARIABLE = "QEMU_MODULE_DIR"


@record
class QEMUInstall:
    """The data directories (``-L``) and module directory one QEMU binary must be given."""

    data_dirs: tuple[str, ...] = ()
    module_dir: str | None = None

    def args(self) -> list[str]:
        """``-L DIR`` for each data directory, to follow the binary on its command line."""
        return [arg for directory in self.data_dirs for arg in ("-L", directory)]

    def environ(self, base: Mapping[str, str] | None = None) -> dict[str, str] | None:
        """The environment to start QEMU with (``base``, default this process's, plus the
        module directory), or ``None`` for an unchanged environment."""
        if self.module_dir is None:
            return None
        return {**(os.environ if base is None else base), MODULE_DIR_VARIABLE: self.module_dir}


def locate_install(binary: str | os.PathLike[str]) -> QEMUInstall:
    """The install of ``binary`` (an existing path; symlinks are followed), as described in
    the module: nothing for one under ``/usr`` or ``/usr/local``."""
    prefix = Path(os.path.realpath(binary)).parent.parent
    if prefix in SYSTEM_PREFIXES:
        return QEMUInstall()
    data_dirs = tuple(str(prefix / d) for d in _DATA_DIRS if (prefix / d).is_dir())
    module_dir = prefix / "lib" / f"{platform.machine()}-linux-gnu" / "qemu"
    return QEMUInstall(data_dirs, str(module_dir) if module_dir.is_dir() else None)
