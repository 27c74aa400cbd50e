"""A test runner killed with SIGKILL while it holds a ``die_with_owner`` domain: its QEMU is
gone within 2 s, and the next ``qctl list`` releases what the domain held (its tap)."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
from support import REPO_ROOT, gone_within, run_qctl, unique

pytestmark = pytest.mark.qemu

# The runner: starts the domain read from stdin, says QEMU's pid and its tap, then waits.
RUNNER = """
import asyncio, sys
import qctl

async def main() -> None:
    defn = qctl.parse_domain(sys.stdin.read())
    dom = await qctl.Domain.start(defn, state_root=sys.argv[1], die_with_owner=True)
    print(dom.process.pid, dom.live.interfaces[0].target_dev, flush=True)
    await asyncio.sleep(120)

asyncio.run(main())
"""


def domain_xml(name: str, emulator: str) -> str:
    """A guestless domain (the firmware finds nothing to boot) with one managed tap."""
    return f"""<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>64</memory>
  <os><type arch='x86_64' machine='q35'>hvm</type></os>
  <devices>
    <emulator>{emulator}</emulator>
    <interface type='ethernet'><model type='virtio'/></interface>
  </devices>
</domain>
"""


def links() -> set[str]:
    """This network namespace's links, asked of the kernel (not /sys)."""
    return {name for _, name in socket.if_nameindex()}


def test_a_killed_runner_leaves_no_qemu_and_list_releases_its_tap(
    tun: None, qemu_binary: str, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    name = unique("owner")
    runner = subprocess.Popen(
        [sys.executable, "-c", RUNNER, str(state)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO_ROOT,
    )
    assert runner.stdin is not None and runner.stdout is not None
    runner.stdin.write(domain_xml(name, qemu_binary))
    runner.stdin.close()
    try:
        pid_text, tap = runner.stdout.readline().split()
        pid = int(pid_text)
        assert tap in links()
    finally:
        runner.kill()
        runner.wait()
    assert gone_within(pid, 2.0)
    listed = run_qctl("list", state=state)
    assert tap not in links()
    assert "running" not in listed.stdout
