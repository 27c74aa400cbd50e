"""The ``qctl`` command end to end on the real QEMU and the bundled guest (private netns).

Each step is a separate ``qctl`` process, as a user (or a script) would run them: start,
list, attach-device, events, detach-device, dumpxml, stop. Errors are one line with the
branch's exit code, never a traceback.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support import guest_domain_xml, run_qctl, unique, wait_for_nics

pytestmark = [pytest.mark.qemu, pytest.mark.guest]

SPARE_PORTS = "\n".join(
    f"    <controller type='pci' index='{i}' model='pcie-root-port'/>" for i in range(1, 3)
)


qctl = run_qctl


def guest_reports(console: Path, mac: str | None = None) -> None:
    """Wait (at most 60 s) for the guest's console to report its NICs — ``mac`` among them
    when given: a guest still booting does not answer an unplug request yet."""

    async def wait() -> None:
        async with asyncio.timeout(60):
            await wait_for_nics(console, lambda nics: mac is None or mac in nics)

    asyncio.run(wait())


def test_lifecycle_and_hotplug_through_the_command_line(
    guest_paths: tuple[Path, Path], tmp_path: Path
) -> None:
    state = tmp_path / "state"
    name = unique("cli")
    domain = tmp_path / "domain.xml"
    console = tmp_path / "serial.log"
    domain.write_text(guest_domain_xml(name, SPARE_PORTS, console=console))
    nic = tmp_path / "nic.xml"
    nic.write_text(
        "<interface type='user'><mac address='52:54:00:30:00:01'/>"
        "<model type='virtio'/><alias name='ua-cli0'/></interface>"
    )

    started = json.loads(qctl("start", str(domain), "--json", state=state).stdout)
    assert started["name"] == name and started["pid"] > 0
    try:
        listed = json.loads(qctl("list", "--json", state=state).stdout)
        assert [{k: row[k] for k in ("name", "pid", "state", "job")} for row in listed] == [
            {"name": name, "pid": started["pid"], "state": "running", "job": None}
        ]

        # A listener and the commands below talk to QEMU at the same time (one monitor each).
        listener = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "qctl.cli.main",
                "events",
                name,
                "--json",
                "--timeout",
                "60",
                "--count",
                "1",
                "--state-dir",
                str(state),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert listener.stderr is not None
        assert "listening for events" in listener.stderr.readline()

        guest_reports(console)  # booted: it will answer the unplug request below
        attached = qctl("attach-device", name, str(nic), state=state).stdout
        assert "ua-cli0" in attached and "52:54:00:30:00:01" in attached
        guest_reports(console, "52:54:00:30:00:01")
        assert "ua-cli0" in qctl("dumpxml", name, state=state).stdout  # live by default
        assert "ua-cli0" not in qctl("dumpxml", name, "--inactive", state=state).stdout

        again = qctl("attach-device", name, str(nic), state=state, check=False)
        assert again.returncode == 3  # a configuration error: the MAC and alias are taken
        assert again.stderr.startswith(f"qctl: {nic}:1: ") and "already used" in again.stderr

        detached = json.loads(
            qctl("detach-device", name, "--alias", "ua-cli0", "--json", state=state).stdout
        )
        assert detached == {"domain": name, "alias": "ua-cli0", "result": "detached"}
        out, _ = listener.communicate(timeout=60)
        events = [json.loads(line) for line in out.splitlines()]  # JSON Lines
        # the attach (another process's, seen in the books), the guest's RX filter, or the removal
        assert any(
            e["event"] in ("DeviceAdded", "DeviceRemoved", "NICRxFilterChanged") for e in events
        )
        assert "ua-cli0" not in qctl("dumpxml", name, state=state).stdout

        missing = qctl("detach-device", name, "--alias", "ua-nope", state=state, check=False)
        assert missing.returncode == 9 and "ua-nope" in missing.stderr
    finally:
        qctl("stop", name, "--force", state=state)
    assert json.loads(qctl("list", "--json", state=state).stdout) == []
    gone = qctl("dumpxml", name, state=state, check=False)
    assert gone.returncode == 8 and "no domain named" in gone.stderr


def test_domxml_to_argv_touches_nothing(tmp_path: Path) -> None:
    domain = tmp_path / "domain.xml"
    domain.write_text(
        guest_domain_xml(
            "argv",
            "<interface type='bridge'><source bridge='br-none'/><model type='virtio'/></interface>",
            console=tmp_path / "serial.log",
        )
    )
    out = qctl("domxml-to-argv", str(domain), state=tmp_path / "state").stdout
    assert "-netdev" in out and "virtio-net-pci" in out
    assert not (tmp_path / "state").exists()


def test_suspend_then_stop_quits_without_waiting_for_acpi(
    guest_paths: tuple[Path, Path], tmp_path: Path
) -> None:
    state = tmp_path / "state"
    name = unique("sus")
    domain = tmp_path / "domain.xml"
    domain.write_text(guest_domain_xml(name, "", console=tmp_path / "serial.log"))
    qctl("start", str(domain), state=state)
    try:
        qctl("suspend", name, state=state)
        [row] = json.loads(qctl("list", "--json", state=state).stdout)
        assert row["state"] == "paused"
        assert qctl("domstate", name, state=state).stdout.strip() == "paused"
        began = time.monotonic()
        stopped = qctl("stop", name, "--timeout", "30", state=state)
        took = time.monotonic() - began
    finally:
        qctl("stop", name, "--force", state=state, check=False)
    # A paused guest cannot answer ACPI: straight to quit, never the 30 s grace.
    assert "the domain is paused: quitting at once" in stopped.stderr
    assert took < 20, took
    assert json.loads(qctl("list", "--json", state=state).stdout) == []
