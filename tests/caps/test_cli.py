"""``qctl caps``: the summary, --json, --flag exit codes, usage errors, --connect, the cache."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakeqmp import RECORDING_7_2, read_log

from caps.support import FakeQEMU, start_log
from qctl import ProcessError, QEMUCaps
from qctl.cli.main import handler
from qctl.cli.parser import build_parser

FAKEQMP = Path(__file__).resolve().parents[1] / "fakeqmp.py"


def qctl_caps(*argv: str) -> int:
    """Run ``qctl caps ARGV`` as qctl's main would; returns the exit status."""
    args = build_parser().parse_args(["caps", *argv])
    return handler(args.handler)(args)


@pytest.fixture(autouse=True)
def private_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))


def test_flag_answers_with_the_exit_status(
    fake_qemu: FakeQEMU, capsys: pytest.CaptureFixture[str]
) -> None:
    binary = str(fake_qemu())
    assert qctl_caps("--binary", binary, "--flag", "virtio_net_failover") == 0
    assert qctl_caps("--binary", binary, "--flag", "XEN_PV_NIC") == 1
    assert capsys.readouterr().out == ""


def test_an_unknown_flag_is_a_usage_error_listing_the_flags(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as info:
        qctl_caps("--flag", "bogus")
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "unknown flag 'bogus'" in err
    assert "virtio_net_failover" in err and "netdev_json" in err


def test_binary_and_connect_exclude_each_other() -> None:
    with pytest.raises(SystemExit) as info:
        qctl_caps("--binary", "/x", "--connect", "/y")
    assert info.value.code == 2


def test_json_prints_the_full_object(
    fake_qemu: FakeQEMU, capsys: pytest.CaptureFixture[str]
) -> None:
    binary = fake_qemu()
    assert qctl_caps("--binary", str(binary), "--json") == 0
    caps = QEMUCaps.from_json(capsys.readouterr().out)
    assert caps.binary == str(binary.resolve())
    assert caps.version[:2] == (7, 2)


def test_the_summary_is_readable(fake_qemu: FakeQEMU, capsys: pytest.CaptureFixture[str]) -> None:
    assert qctl_caps("--binary", str(fake_qemu())) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == "version   7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)"
    assert lines[2] == "kvm       present: yes, enabled: yes"
    assert "machines  59 (default pc-i440fx-7.2)" in lines
    flags = dict(line.split() for line in lines[lines.index("flags") + 1 :])
    assert flags["virtio_net_failover"] == "yes"
    assert flags["netdev_json"] == "yes"
    assert flags["xen_pv_nic"] == "no"


def test_lookups_go_through_the_cache_unless_told_not_to(fake_qemu: FakeQEMU) -> None:
    binary = fake_qemu()
    qctl_caps("--binary", str(binary), "--flag", "vfio_pci")
    qctl_caps("--binary", str(binary), "--flag", "vfio_pci")
    assert len(read_log(start_log(binary))) == 1
    qctl_caps("--binary", str(binary), "--flag", "vfio_pci", "--no-cache")
    assert len(read_log(start_log(binary))) == 2


def test_qctl_qemu_names_the_default_binary(
    fake_qemu: FakeQEMU, monkeypatch: pytest.MonkeyPatch
) -> None:
    binary = fake_qemu()
    monkeypatch.setenv("QCTL_QEMU", str(binary))
    assert qctl_caps("--flag", "add_fd") == 0
    assert len(read_log(start_log(binary))) == 1


@pytest.fixture
def running_qemu(sockdir: str) -> Iterator[str]:
    """A fake running QEMU (the replayed recording) and its QMP socket."""
    path = os.path.join(sockdir, "running.sock")
    server = subprocess.Popen(
        [
            *(sys.executable, str(FAKEQMP), "--recording", str(RECORDING_7_2)),
            *("-qmp", f"unix:{path},server=on,wait=off"),
        ]
    )
    try:
        deadline = time.monotonic() + 10
        while not os.path.exists(path):
            assert server.poll() is None and time.monotonic() < deadline
            time.sleep(0.01)
        yield path
    finally:
        server.kill()
        server.wait()


def test_connect_asks_a_running_qemu(running_qemu: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert qctl_caps("--connect", running_qemu, "--json") == 0
    caps = QEMUCaps.from_json(capsys.readouterr().out)
    assert caps.binary is None and caps.version[:2] == (7, 2)


def test_probe_failures_reach_main_as_qctl_errors() -> None:
    with pytest.raises(ProcessError, match="exited"):
        qctl_caps("--binary", "/bin/true", "--no-cache")
