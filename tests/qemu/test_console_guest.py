"""The console of the bundled guest (booted by qctl's own pytest plugin): QEMU's chardev is
the socket and log qctl owns, several readers see the same output from the first byte, and
what is sent reaches the guest (its tty echoes it)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from qctl.testing import Guest

pytestmark = [pytest.mark.qemu, pytest.mark.guest]


async def test_the_console_is_the_pty_and_a_log_qctl_owns(qctl_guest: Guest) -> None:
    directory = qctl_guest.domain.directory
    proc = Path(f"/proc/{qctl_guest.domain.process.pid}/cmdline")
    cmdline = (await asyncio.to_thread(proc.read_bytes)).split(b"\0")
    chardev = next(arg for arg in cmdline if arg.startswith(b"pty,id=charserial0"))
    assert f"logfile={directory.console_log}".encode() in chardev
    [serial] = qctl_guest.domain.live.serials  # the pty, in the live XML as libvirt shows it
    assert serial.source_path is not None and serial.source_path.startswith("/dev/pts/")
    assert qctl_guest.console.tty == Path(serial.source_path)


async def test_readers_attached_at_any_time_see_everything_once(qctl_guest: Guest) -> None:
    console = qctl_guest.console
    late = console.reader()  # attached after the boot: starts from the first byte all the same
    assert (await late.wait_for("QCTL-GUEST-READY", timeout=5)).group(0) == "QCTL-GUEST-READY"
    followers = [console.reader(), console.reader()]
    await console.send("marker-one\n")
    await console.send("marker-two\n")
    seen = []
    for reader in followers:
        lines = []
        async with asyncio.timeout(30):
            async for line in reader:
                lines.append(line)
                if "marker-two" in line:
                    break
        seen.append(lines)
    assert seen[0] == seen[1]
    assert seen[0].index("QCTL-GUEST-READY") < len(seen[0]) - 1
    assert sum("marker-one" in line for line in seen[0]) == 1
    fresh = console.reader(from_end=True)  # from here on: not the boot, not the markers
    await console.send("marker-three\n")
    await fresh.wait_for("marker-three", timeout=30)
    assert not any("QCTL-GUEST-READY" in line or "marker-two" in line for line in fresh.recent)
