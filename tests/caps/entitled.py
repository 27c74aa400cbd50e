"""What a recorded probe and the real probe of the same QEMU are entitled to agree on.

A recording is made on one machine and replayed on others. Two things there legitimately
differ from one machine to another and nothing else does:

- which of QEMU's *optional* loadable modules can load. Debian ships some modules in
  packages that ``qemu-system-x86`` only recommends (``qemu-system-gui`` holds
  ``hw-display-virtio-gpu-gl``), and QEMU lists a module's QOM types only when its file is
  in the module directory and the libraries it needs are installed (scripts/fetch-qemu
  unpacks QEMU 10.0's, whose ``libvirglrenderer1`` may be missing);
- the micro version and Debian revision: the package index serves the newest stable update,
  so a fresh machine may have 7.2.23 where the recording has 7.2.22.

:func:`comparable` takes both out, after checking that the table below is true of this
machine: an optional module installed here has its types listed by the real QEMU, one that
cannot load (absent, or missing a library) has none of them.
"""

from __future__ import annotations

import dataclasses
import platform
import shutil
import subprocess
from pathlib import Path

from qctl.caps import QEMUCaps, locate_install

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
        loads = _loadable(module_dir / f"{module}.so")
        listed = types & real.qom_types
        assert listed == (types if loads else frozenset()), (
            f"{module}.so in {module_dir} {'loads' if loads else 'is absent or cannot load'}, "
            f"yet QEMU lists {sorted(listed)} of its types {sorted(types)}"
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


def _loadable(module: Path) -> bool:
    """Whether ``module`` exists and the dynamic linker finds every library it needs."""
    if not module.is_file():
        return False
    linked = subprocess.run(["ldd", str(module)], capture_output=True, text=True, check=False)
    return linked.returncode == 0 and "not found" not in linked.stdout


def module_dir(binary: str) -> Path:
    """Where QEMU ``binary`` loads its modules from: its own (see :mod:`qctl.caps.install`),
    else the system's ``PREFIX/lib/MULTIARCH/qemu``."""
    path = Path(shutil.which(binary) or binary).resolve()
    own = locate_install(path).module_dir
    if own is not None:
        return Path(own)
    return path.parent.parent / "lib" / f"{platform.machine()}-linux-gnu" / "qemu"
