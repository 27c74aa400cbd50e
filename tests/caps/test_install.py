"""Where a QEMU outside the system prefixes keeps its firmware and modules."""

from __future__ import annotations

import platform
from pathlib import Path

from qctl.caps import QEMUInstall, locate_install

MULTIARCH = f"{platform.machine()}-linux-gnu"


def _tree(root: Path, *dirs: str) -> Path:
    """A QEMU unpacked under ``root/usr`` with the given directories; its binary."""
    binary = root / "usr" / "bin" / "qemu-system-x86_64"
    binary.parent.mkdir(parents=True)
    binary.touch()
    for directory in dirs:
        (root / "usr" / directory).mkdir(parents=True)
    return binary


def test_a_system_qemu_needs_nothing_stated() -> None:
    assert locate_install("/usr/bin/qemu-system-x86_64") == QEMUInstall()
    assert locate_install("/usr/local/bin/qemu-system-x86_64") == QEMUInstall()
    assert QEMUInstall().args() == [] and QEMUInstall().environ() is None


def test_an_unpacked_qemu_gets_its_own_data_and_module_directories(tmp_path: Path) -> None:
    binary = _tree(
        tmp_path, "lib/ipxe/qemu", "share/qemu", "share/seabios", f"lib/{MULTIARCH}/qemu"
    )
    install = locate_install(binary)
    usr = tmp_path / "usr"
    assert install.args() == [
        "-L", f"{usr}/share/qemu",
        "-L", f"{usr}/share/seabios",
        "-L", f"{usr}/lib/ipxe/qemu",
    ]  # fmt: skip
    assert install.environ({"PATH": "/bin"}) == {
        "PATH": "/bin",
        "QEMU_MODULE_DIR": f"{usr}/lib/{MULTIARCH}/qemu",
    }


def test_only_the_directories_that_exist_are_stated(tmp_path: Path) -> None:
    binary = _tree(tmp_path, "share/qemu")
    assert locate_install(binary) == QEMUInstall((f"{tmp_path}/usr/share/qemu",), None)


def test_a_symlink_is_followed_to_the_real_tree(tmp_path: Path) -> None:
    binary = _tree(tmp_path / "tree", "share/qemu")
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "qemu").symlink_to(binary)
    assert locate_install(tmp_path / "bin" / "qemu").data_dirs == (
        f"{tmp_path}/tree/usr/share/qemu",
    )
