"""A state root another user could write is never trusted (issue 11, items 1, 11 and 12).

Each test plants what an unprivileged user could, in the way they could, and checks that qctl
refuses with a line saying why, changes nothing it did not create, and follows no symlink.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest
from support import run_qctl

import qctl.qemu.state as state_module
from qctl.errors import ProcessError, StateError
from qctl.qemu.process import QEMUProcess
from qctl.qemu.state import StateRoot

OTHER_UID = 65534  # nobody


@pytest.fixture(autouse=True)
def _needs_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("giving files to another uid needs root")


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_a_root_made_by_another_user_is_refused(tmp_path: Path) -> None:
    planted = tmp_path / "qctl"
    (planted / "domains" / "vm").mkdir(parents=True)
    (planted / "domains" / "vm" / "status.json").write_text('{"binary": "/tmp/evil"}')
    for path in (planted, planted / "domains", planted / "domains" / "vm"):
        os.chown(path, OTHER_UID, OTHER_UID)
    root = StateRoot(planted)
    for action in (root.ensure, root.names, root.domain("vm").read_status):
        with pytest.raises(StateError, match=f"refusing state directory {planted}: it belongs "
                           f"to uid {OTHER_UID}, not to uid 0"):
            action()
    assert planted.stat().st_uid == OTHER_UID and _mode(planted) == 0o755  # not taken over


def test_a_root_that_is_a_symlink_is_refused_and_its_target_left_alone(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.mkdir(mode=0o755)
    (tmp_path / "qctl").symlink_to(target)
    with pytest.raises(StateError, match=r"refusing state directory .*/qctl: it is a symlink"):
        StateRoot(tmp_path / "qctl").ensure()
    assert _mode(target) == 0o755 and not (target / "domains").exists()


def test_a_group_writable_domains_folder_is_refused(tmp_path: Path) -> None:
    root = StateRoot(tmp_path / "qctl")
    root.ensure()
    os.chmod(root.path / "domains", 0o770)
    with pytest.raises(StateError, match="group or others may write it \\(mode 0770\\)"):
        root.names()
    assert _mode(root.path / "domains") == 0o770  # refused, not "fixed"


def test_a_world_writable_ancestor_without_sticky_bit_is_refused(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    with pytest.raises(StateError, match="others may write that directory and it is not sticky"):
        StateRoot(shared / "qctl").ensure()
    os.chmod(shared, 0o1777)  # like /tmp: others cannot rename what is ours in it
    StateRoot(shared / "qctl").ensure()


def test_a_planted_status_file_symlink_is_not_followed(tmp_path: Path) -> None:
    root = StateRoot(tmp_path / "qctl")
    dom = root.domain("vm")
    dom.make()
    decoy = tmp_path / "decoy.json"
    decoy.write_text('{"pid": 1}')
    dom.status_file.symlink_to(decoy)
    with pytest.raises(StateError, match=r"refusing .*/status.json: it is a symlink"):
        dom.read_status()


def test_a_status_file_of_another_user_is_refused(tmp_path: Path) -> None:
    dom = StateRoot(tmp_path / "qctl").domain("vm")
    dom.make()
    dom.write_status({"name": "vm"})
    os.chown(dom.status_file, OTHER_UID, OTHER_UID)
    with pytest.raises(StateError, match=f"belongs to uid {OTHER_UID}"):
        dom.read_status()


async def test_a_planted_log_symlink_gets_no_output(tmp_path: Path) -> None:
    dom = StateRoot(tmp_path / "qctl").domain("vm")
    dom.make()
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    os.chmod(victim, 0o644)
    dom.log_file.symlink_to(victim)
    with pytest.raises(ProcessError, match=r"cannot open QEMU's log .*: Too many levels"):
        await QEMUProcess.spawn(["/bin/echo", "owned"], log_path=dom.log_file)
    assert victim.read_text() == "precious\n" and _mode(victim) == 0o644


def test_directories_are_private_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        root = StateRoot(tmp_path / "a" / "qctl")
        root.ensure()
    finally:
        os.umask(old)
    assert _mode(root.path) == 0o700 and _mode(root.path / "domains") == 0o700


async def test_unknown_domains_leave_nothing_behind(tmp_path: Path) -> None:
    root = StateRoot(tmp_path / "qctl")
    assert root.names() == []
    assert not root.path.exists()  # reading creates nothing
    root.ensure()
    with pytest.raises(StateError, match="no domain named 'ghost' is running"):
        await root.domain("ghost").lock()
    assert os.listdir(root.path / "domains") == []


def test_cli_on_unknown_domain_creates_no_state(tmp_path: Path) -> None:
    state = tmp_path / "state"
    result = run_qctl("dumpxml", "ghost", state=state, check=False)
    assert result.returncode == 8 and "no domain named 'ghost'" in result.stderr
    result = run_qctl("list", state=state, check=False)  # a mistyped root is an error…
    assert result.returncode == 8 and "no state directory" in result.stderr
    assert not state.exists()  # …and nothing is created


def test_a_name_with_a_trailing_newline_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StateError, match="not usable as a state directory name"):
        StateRoot(tmp_path).domain("vm\n")


def test_state_dir_that_is_a_file_is_one_line(tmp_path: Path) -> None:
    state = tmp_path / "file"
    state.write_text("")
    result = run_qctl("list", state=state, check=False)
    assert result.returncode == 8
    assert result.stderr == f"qctl: refusing state directory {state}: it is not a directory\n"


def test_a_full_disk_during_a_status_write_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dom = StateRoot(tmp_path / "qctl").domain("vm")
    dom.make()
    dom.write_status({"name": "vm", "n": 1})

    def full(fd: int, data: bytes) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(StateError, match=r"no space left writing status of 'vm' \(.*status.json\)"):
        dom.write_status({"name": "vm", "n": 2})
    monkeypatch.undo()
    assert dom.read_status() == {"name": "vm", "n": 1}
    assert sorted(os.listdir(dom.path)) == ["status.json"]  # no temporary file left


def test_a_parent_checked_before_is_checked_again_when_it_is_another_directory(
    tmp_path: Path,
) -> None:
    parent = tmp_path / "a" / "b"
    parent.mkdir(parents=True)
    StateRoot(parent / "qctl").ensure()  # walked and checked: remembered
    (tmp_path / "a").rename(tmp_path / "old")  # the path now leads to another directory…
    parent.mkdir(parents=True)
    os.chmod(tmp_path / "a", 0o777)  # …in one that others may write (and so replace it)
    with pytest.raises(StateError, match="others may write that directory and it is not sticky"):
        StateRoot(parent / "qctl").ensure()


def test_a_parent_checked_before_that_others_may_now_write_is_refused(tmp_path: Path) -> None:
    parent = tmp_path / "p"
    parent.mkdir()
    StateRoot(parent / "qctl").ensure()
    os.chmod(parent, 0o777)  # the very directory checked, changed since
    with pytest.raises(StateError, match="others may write that directory and it is not sticky"):
        StateRoot(parent / "qctl").names()


def test_an_ancestor_that_others_may_now_write_is_noticed_within_a_second(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parent = tmp_path / "a" / "p"
    parent.mkdir(parents=True)
    StateRoot(parent / "qctl").ensure()
    os.chmod(tmp_path / "a", 0o777)  # an ancestor above the parent, changed since the walk
    monkeypatch.setattr(state_module, "_CHECKED_FOR", -1.0)  # as if a second had passed
    with pytest.raises(StateError, match="others may write that directory and it is not sticky"):
        StateRoot(parent / "qctl").names()


def test_a_root_reached_through_a_symlink_follows_the_symlink_when_it_changes(
    tmp_path: Path,
) -> None:
    for tree in ("x", "y"):
        (tmp_path / tree).mkdir()
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "x")
    root = StateRoot(link / "qctl")
    root.ensure()
    root.write("networks", "mark", b"x")
    link.unlink()
    link.symlink_to(tmp_path / "y")  # the path now leads elsewhere: read where it leads
    assert root.read("networks", "mark") is None
    root.write("networks", "mark", b"y")
    assert (tmp_path / "y" / "qctl" / "networks" / "mark").read_bytes() == b"y"
    assert (tmp_path / "x" / "qctl" / "networks" / "mark").read_bytes() == b"x"
