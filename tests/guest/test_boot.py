"""Boot the bundled test guest under TCG with QEMU directly (no qctl involved).

Checks the guest's serial protocol (see guest/init): the ``QCTL-GUEST-READY`` marker, then a
``QCTL-NICS:`` line listing a virtio-net and an e1000e NIC with the drivers bound and the MACs
given on the command line.
"""

from __future__ import annotations

import os
import re
import selectors
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from qctl.caps import locate_install

pytestmark = [pytest.mark.qemu, pytest.mark.guest]

TIMEOUT = 60.0
READY = "QCTL-GUEST-READY"
NICS_RE = re.compile(r"QCTL-NICS:(.*)$")
VIRTIO_MAC = "52:54:00:00:00:01"
E1000E_MAC = "52:54:00:00:00:02"


def qemu_command(qemu: str, kernel: Path, initrd: Path) -> list[str]:
    return [
        qemu,
        *locate_install(qemu).args(),
        "-accel", "tcg",
        "-machine", "q35",
        "-m", "256",
        "-nodefaults",
        "-no-user-config",
        "-display", "none",
        "-serial", "stdio",
        "-kernel", str(kernel),
        "-initrd", str(initrd),
        "-append", "console=ttyS0 quiet panic=-1",
        "-no-reboot",
        "-netdev", "user,id=n0",
        "-device", f"virtio-net-pci,netdev=n0,mac={VIRTIO_MAC},romfile=",
        "-netdev", "user,id=n1",
        # On q35's pcie.0 as an integrated endpoint: e1000e is PCIe-only.
        "-device", f"e1000e,netdev=n1,mac={E1000E_MAC},romfile=",
    ]  # fmt: skip


def serial_lines(proc: subprocess.Popen[bytes], deadline: float) -> Iterator[str]:
    """Lines of the guest's serial console (QEMU's stdout) until EOF or the deadline."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    os.set_blocking(fd, False)
    buf = b""
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            if not sel.select(left):
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                return
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                yield line.decode(errors="replace").rstrip("\r")


def parse_nics(text: str) -> dict[str, tuple[str, str]]:
    """``eth0,virtio_net,52:54:… eth1,…`` -> {name: (driver, mac)}."""
    nics: dict[str, tuple[str, str]] = {}
    for entry in text.split():
        name, driver, mac = entry.split(",")
        nics[name] = (driver, mac)
    return nics


def boot_and_check(qemu: str, kernel: Path, initrd: Path, tmp_path: Path) -> None:
    stderr_path = tmp_path / "qemu.stderr"
    seen: list[str] = []
    start = time.monotonic()
    with stderr_path.open("wb") as stderr:
        proc = subprocess.Popen(
            qemu_command(qemu, kernel, initrd),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=locate_install(qemu).environ(),
        )
    try:
        ready_after: float | None = None
        last_nics: dict[str, tuple[str, str]] | None = None
        want = {("virtio_net", VIRTIO_MAC), ("e1000e", E1000E_MAC)}
        for line in serial_lines(proc, start + TIMEOUT):
            seen.append(line)
            if ready_after is None:
                if READY in line:
                    ready_after = time.monotonic() - start
                continue
            match = NICS_RE.search(line)
            if match:
                last_nics = parse_nics(match.group(1))
                if want <= set(last_nics.values()):
                    break
        else:
            proc.kill()
            proc.wait(timeout=10)
            tail = "\n".join(seen[-30:])
            err = stderr_path.read_text(errors="replace")[-2000:]
            pytest.fail(
                f"no {'NIC report' if ready_after else READY} within {TIMEOUT:.0f} s "
                f"(QEMU exit status {proc.returncode}, last NICs {last_nics})\n"
                f"--- serial tail ---\n{tail}\n--- qemu stderr ---\n{err}"
            )
        assert ready_after is not None
        assert last_nics is not None
        assert len(last_nics) == 2, last_nics
        print(f"{kernel.name}: ready after {ready_after:.2f} s")
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


def test_boot_reports_ready_and_nics(
    qemu_binary: str, guest_paths: tuple[Path, Path], tmp_path: Path
) -> None:
    kernel, initrd = guest_paths
    boot_and_check(qemu_binary, kernel, initrd, tmp_path)


def test_boot_pvh_kernel(
    qemu_binary: str, guest_paths: tuple[Path, Path], guest_pvh_kernel: Path, tmp_path: Path
) -> None:
    boot_and_check(qemu_binary, guest_pvh_kernel, guest_paths[1], tmp_path)
