"""QEMU confined when qctl runs as root (issue 11, item 14): the options that drop its
privileges and turn the sandbox on, files passed in fd sets, VFIO groups handed over and
back, and a real QEMU checked in /proc."""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import stat
import time
from pathlib import Path

import pytest
from support import guest_domain_xml, run_qctl, unique

from qctl.caps import QEMUCaps
from qctl.conf import parse_domain
from qctl.errors import HostError
from qctl.qemu.command import Features, build_command
from qctl.qemu.confine import (
    DEFAULT_QEMU_USER,
    SANDBOX,
    Confinement,
    PassedFile,
    confine_args,
    confinement_for,
    hand_vfio_group,
    open_files,
)

SERIAL = """<domain type='qemu'>
  <name>c</name>
  <memory unit='MiB'>64</memory>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices><serial type='file'><source path='{path}'/></serial></devices>
</domain>"""
WITH_SANDBOX = QEMUCaps(command_line_options={"sandbox"})
NEWER = QEMUCaps(command_line_options={"sandbox", "run-with", "run-with.user"})


def _root_only() -> None:
    if os.geteuid() != 0:
        pytest.skip("confinement is for qctl running as root")


def test_older_qemu_drops_privileges_with_runas_and_sandboxes() -> None:
    assert confine_args(Confinement("q", 5, 6, run_with=False, sandbox=True)) == [
        "-runas", "q", "-sandbox", SANDBOX,
    ]
    assert SANDBOX == "on,obsolete=deny,elevateprivileges=allow,spawn=deny,resourcecontrol=deny"


def test_newer_qemu_uses_run_with_and_no_sandbox_without_seccomp() -> None:
    assert confine_args(Confinement("q", 5, 6, run_with=True, sandbox=False)) == [
        "-run-with", "user=q",
    ]
    assert confine_args(None) == []


def test_the_decision_follows_the_probe_and_the_escape() -> None:
    _root_only()
    confined = confinement_for(WITH_SANDBOX, user="nobody")
    assert confined == Confinement("nobody", 65534, pwd.getpwnam("nobody").pw_gid, False, True)
    newer = confinement_for(NEWER, user="nobody")
    assert newer is not None and newer.run_with
    assert confinement_for(WITH_SANDBOX, confine=False) is None
    with pytest.raises(HostError, match=r"the QEMU user 'no-such-user' does not exist: .*"
                       "--no-confine"):
        confinement_for(WITH_SANDBOX, user="no-such-user")


def test_files_reach_qemu_in_fd_sets(tmp_path: Path) -> None:
    log = tmp_path / "serial,1.log"
    log.write_text("old output")
    domain = parse_domain(SERIAL.format(path=log))
    with contextlib.ExitStack() as stack:
        files = open_files(domain, stack)
        fd = int(files[str(log)].fd)
        assert os.fstat(fd).st_ino == log.stat().st_ino
        assert log.read_text() == ""  # truncated, as QEMU would have
    with pytest.raises(OSError):
        os.fstat(fd)  # closed with the stack
    live = SERIAL.format(path=log).replace("</serial>", "<alias name='serial0'/></serial>")
    argv = build_command(
        parse_domain(live, live=True),
        Features(),
        {},
        binary="qemu",
        monitor="fd=3",
        confinement=Confinement("q", 1, 1, sandbox=True),
        files={str(log): PassedFile("7", 1)},
    )
    assert argv[argv.index("-add-fd") + 1] == "fd=7,set=1"
    assert "file,id=charserial0,path=/dev/fdset/1" in argv
    assert argv.index("-runas") < argv.index("-add-fd")


def test_a_file_qctl_cannot_open_is_one_line(tmp_path: Path) -> None:
    domain = parse_domain(SERIAL.format(path=tmp_path / "missing" / "log"))
    with pytest.raises(HostError, match=r"cannot open .*/missing/log for QEMU: No such file"), \
            contextlib.ExitStack() as stack:
        open_files(domain, stack)


def test_vfio_groups_are_handed_over_and_back(tmp_path: Path) -> None:
    _root_only()
    group = tmp_path / "42"
    group.write_text("")
    confined = Confinement("nobody", 65534, 65534)
    with contextlib.ExitStack() as stack:
        hand_vfio_group(42, confined, stack, vfio_dir=str(tmp_path))
        assert (group.stat().st_uid, group.stat().st_gid) == (65534, 65534)
    assert (group.stat().st_uid, group.stat().st_gid) == (0, 0)


def _status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return dict(line.split(":\t", 1) for line in lines if ":\t" in line)


@pytest.mark.qemu
@pytest.mark.guest
def test_a_started_qemu_runs_as_the_qemu_user_in_its_sandbox(
    guest_paths: tuple[Path, Path], tmp_path: Path
) -> None:
    _root_only()
    qemu_user = pwd.getpwnam(DEFAULT_QEMU_USER)
    state = tmp_path / "state"
    name = unique("confined")
    console = tmp_path / "private" / "serial.log"  # in a 0700 folder of root's
    console.parent.mkdir(mode=0o700)
    domain = tmp_path / "domain.xml"
    domain.write_text(guest_domain_xml(name, "", console=console))
    started = json.loads(run_qctl("start", str(domain), "--json", state=state).stdout)
    try:
        status = _status(started["pid"])
        assert status["Uid"].split() == [str(qemu_user.pw_uid)] * 4
        assert status["Gid"].split()[0] == str(qemu_user.pw_gid)
        assert status["Seccomp"] == "2" and status["NoNewPrivs"] == "1"
        # The kernel and initrd were read before the drop; the serial log came as an fd.
        deadline = time.monotonic() + 60
        while b"QCTL-GUEST-READY" not in console.read_bytes():
            assert time.monotonic() < deadline, console.read_text()[-2000:]
            time.sleep(0.2)
        assert console.stat().st_uid == 0 and stat.S_IMODE(console.stat().st_mode) == 0o600
        # A damaged pool file does not stop a domain that uses no pool (item 4).
        networks = state / "networks"
        networks.mkdir(mode=0o700)
        (networks / "allocations.json").write_text("{not json")
    finally:
        run_qctl("stop", "--force", name, state=state)
    assert not (state / "domains" / name).exists()


@pytest.mark.qemu
def test_no_confine_runs_qemu_as_qctl(guest_paths: tuple[Path, Path], tmp_path: Path) -> None:
    _root_only()
    state = tmp_path / "state"
    name = unique("free")
    domain = tmp_path / "domain.xml"
    domain.write_text(guest_domain_xml(name, "", console=tmp_path / "serial.log"))
    started = json.loads(
        run_qctl("start", "--no-confine", str(domain), "--json", state=state).stdout
    )
    try:
        status = _status(started["pid"])
        assert status["Uid"].split()[0] == "0" and status["Seccomp"] == "0"
    finally:
        run_qctl("stop", "--force", name, state=state)
