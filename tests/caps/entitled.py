"""What a recorded probe and the real probe of the same QEMU are entitled to agree on.

A recording is made on one machine and replayed on others. Two things there legitimately
differ from one machine to another and nothing else does:

- which of QEMU's *optional* loadable modules are installed. Debian ships some modules in
  packages that ``qemu-system-x86`` only recommends (``qemu-system-gui`` holds
  ``hw-display-virtio-gpu-gl``), and QEMU lists a module's QOM types only when its file is
  in the module directory;
- the micro version and Debian revision: the package index serves the newest stable update,
  so a fresh machine may have 7.2.23 where the recording has 7.2.22.

:func:`comparable` takes both out, after checking that the table below is true of this
machine: an optional module installed here has its types listed by the real QEMU, one that
is absent has none of them.
"""

from __future__ import annotations

import dataclasses
import platform
import shutil
from pathlib import Path

from qctl.caps import QEMUCaps

# QOM types that QEMU lists only when the named module file is installed, for modules shipped
# outside qemu-system-x86 and qemu-system-common (read from the module's file and from QEMU's
# type list with and without it).
OPTIONAL_MODULE_TYPES: dict[str, frozenset[str]] = {
    "hw-display-virtio-gpu-gl": frozenset({"virtio-gpu-gl-device"}),
}


def comparable(recorded: QEMUCaps, real: QEMUCaps, module_dir: Path) -> tuple[QEMUCaps, QEMUCaps]:
    """``recorded`` and ``real`` less what the machine decides (see the module docstring).

    ``module_dir`` is where the real QEMU loads its modules from.
    """
    assert recorded.version[:2] == real.version[:2], (recorded.version, real.version)
    optional: set[str] = set()
    for module, types in OPTIONAL_MODULE_TYPES.items():
        installed = (module_dir / f"{module}.so").is_file()
        listed = types & real.qom_types
        assert listed == (types if installed else frozenset()), (
            f"{module}.so is {'' if installed else 'not '}in {module_dir}, yet QEMU lists "
            f"{sorted(listed)} of its types {sorted(types)}"
        )
        optional |= types

    def strip(caps: QEMUCaps) -> QEMUCaps:
        return dataclasses.replace(
            caps,
            binary=None,
            version=real.version,
            package=real.package,
            qom_types=caps.qom_types - optional,
        )

    return strip(recorded), strip(real)


def module_dir(binary: str) -> Path:
    """Where a Debian-built QEMU loads its modules from: ``PREFIX/lib/MULTIARCH/qemu``."""
    prefix = Path(shutil.which(binary) or binary).resolve().parent.parent
    return prefix / "lib" / f"{platform.machine()}-linux-gnu" / "qemu"
