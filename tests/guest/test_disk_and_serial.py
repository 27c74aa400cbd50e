"""Disks and serial ports on the real QEMU with the bundled guest (TCG).

The guest boots with its root on a virtio disk (scripts/build-guest's ``root.img``, via
``qctl.root=/dev/vda``) and says so on its console; a unix-socket serial port carries the
console, and a pty serial port shows its pty in the live XML; a missing image is refused
before anything is created.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from pathlib import Path

import pytest
from support import guest_dir, guest_domain_xml, unique

from qctl import Domain, ValidationError, parse_domain

pytestmark = [pytest.mark.qemu, pytest.mark.guest]

BOOT_TIMEOUT = 90.0
READY = "QCTL-GUEST-READY"


@pytest.fixture
def root_image(guest_paths: tuple[Path, Path], tmp_path: Path) -> Path:
    """A private copy of the guest's ext4 root disk (QEMU locks the image it writes to)."""
    image = guest_dir() / "root.img"
    if not image.is_file():
        pytest.fail(f"no {image}: scripts/build-guest makes it")
    copy = tmp_path / "root.img"
    shutil.copyfile(image, copy)
    return copy


def _with_cmdline(xml: str, extra: str) -> str:
    return xml.replace("<cmdline>console=ttyS0", f"<cmdline>{extra} console=ttyS0")


def _log(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


async def _wait_for_text(path: Path, pattern: str) -> str:
    """The serial log at ``path`` once ``pattern`` matches it (bound it at the call site)."""
    while True:
        text = _log(path)
        if re.search(pattern, text, re.MULTILINE):
            return text
        await asyncio.sleep(0.1)


async def test_guest_boots_with_its_root_on_a_virtio_disk(
    root_image: Path, tmp_path: Path
) -> None:
    console = tmp_path / "serial.log"
    disk = f"""
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='{root_image}'/>
      <target dev='vda' bus='virtio'/>
      <serial>QCTL-ROOT-DISK</serial>
    </disk>"""
    xml = guest_domain_xml(unique("disk"), disk, console=console)
    xml = _with_cmdline(xml, "qctl.root=/dev/vda")
    async with Domain.start(parse_domain(xml), state_root=tmp_path / "state") as dom:
        try:
            async with asyncio.timeout(BOOT_TIMEOUT):
                text = await _wait_for_text(console, f"^{READY}")
            lines = text.splitlines()
            assert "QCTL-ROOT: /dev/vda ext4" in lines, text
            assert lines.index("QCTL-ROOT: /dev/vda ext4") < lines.index(READY)
            assert "QCTL-ROOT-FAILED" not in text
            (live,) = dom.live.disks
            assert live.alias == "virtio-disk0" and live.address is not None
            assert "<alias name=\"virtio-disk0\"/>" in dom.xml()
        finally:
            await dom.stop(force=True)


async def test_unix_serial_carries_the_console_and_pty_shows_its_path(
    guest_paths: tuple[Path, Path], tmp_path: Path, sockdir: str
) -> None:
    sock = Path(sockdir) / "serial.sock"
    console_log = tmp_path / "serial.log"
    xml = guest_domain_xml(unique("ser"), "<serial type='pty'/>", console=console_log)
    # The unix socket is serial port 0 (the guest's console, ttyS0); the pty is port 1.
    xml = xml.replace(
        f"<serial type='file'><source path='{console_log}'/></serial>",
        f"<serial type='unix'><source mode='bind' path='{sock}'/></serial>",
    )
    async with Domain.start(parse_domain(xml), state_root=tmp_path / "state") as dom:
        try:
            pty = dom.live.serials[1]
            assert pty.source_path is not None and pty.source_path.startswith("/dev/pts/")
            fd = os.open(pty.source_path, os.O_RDWR | os.O_NOCTTY)
            try:
                assert os.isatty(fd)
            finally:
                os.close(fd)
            assert f"<source path=\"{pty.source_path}\"/>" in dom.xml()
            # recorded in the status file: another handle (process) sees it too
            async with Domain.connect(dom.name, state_root=tmp_path / "state") as other:
                assert other.live.serials[1].source_path == pty.source_path
            reader, writer = await asyncio.open_unix_connection(str(sock))
            try:
                async with asyncio.timeout(BOOT_TIMEOUT):
                    while (await reader.readline()).decode(errors="replace").strip() != READY:
                        pass
            finally:
                writer.close()
        finally:
            await dom.stop(force=True)


async def test_a_missing_image_is_refused_before_anything_starts(
    guest_paths: tuple[Path, Path], tmp_path: Path
) -> None:
    gone = tmp_path / "gone.img"
    disk = f"<disk type='file'><source file='{gone}'/><target dev='vda'/></disk>"
    defn = parse_domain(guest_domain_xml(unique("miss"), disk, console=tmp_path / "s.log"))
    with pytest.raises(ValidationError, match=f"disk vda: image file '{gone}' does not exist"):
        await Domain.start(defn, state_root=tmp_path / "state")
    assert not (tmp_path / "state").exists()
