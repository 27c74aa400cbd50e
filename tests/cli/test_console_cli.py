"""``qctl console`` as a terminal user meets it: attached in a tmux pane, keys typed in,
Ctrl-] to leave; ``--log`` and ``--log --follow`` in other processes meanwhile.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support import REPO_ROOT, run_qctl, unique

from qctl.testing import guest_xml

pytestmark = [pytest.mark.qemu, pytest.mark.guest]

TIMEOUT = 90.0


def _wait(condition: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.1)


class Tmux:
    """A tmux server of its own (socket in ``sockdir``) running one command in one pane."""

    def __init__(self, sockdir: str) -> None:
        self.socket = os.path.join(sockdir, "tmux")

    def __call__(self, *args: str) -> str:
        result = subprocess.run(
            ["tmux", "-S", self.socket, *args], capture_output=True, text=True, check=True
        )
        return result.stdout

    def screen(self) -> str:
        return self("capture-pane", "-p", "-t", "qctl")

    def pane(self, field: str) -> str:
        return self("display-message", "-p", "-t", "qctl", f"#{{{field}}}").strip()


@pytest.fixture
def tmux(sockdir: str) -> Iterator[Tmux]:
    if shutil.which("tmux") is None:
        pytest.skip("tmux not installed (scripts/bootstrap installs it)")
    server = Tmux(sockdir)
    yield server
    subprocess.run(["tmux", "-S", server.socket, "kill-server"], capture_output=True)


@pytest.fixture
def running(guest_paths: tuple[Path, Path], tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A domain started by ``qctl start`` (QEMU outlives that process): (name, state root)."""
    state = tmp_path / "state"
    name = unique("con")
    domain = tmp_path / "domain.xml"
    domain.write_text(guest_xml(name, directory=guest_paths[1].parent))
    run_qctl("start", str(domain), state=state)
    try:
        yield name, state
    finally:
        run_qctl("stop", name, "--force", state=state, check=False)


def _qctl_argv(*args: str, state: Path) -> list[str]:
    return [sys.executable, "-m", "qctl.cli.main", *args, "--state-dir", str(state)]


def test_attach_a_terminal_type_and_leave_with_ctrl_bracket(
    running: tuple[str, Path], tmux: Tmux
) -> None:
    name, state = running
    follow = subprocess.Popen(
        _qctl_argv("console", name, "--log", "--follow", state=state),
        stdout=subprocess.PIPE,
    )
    try:
        assert follow.stdout is not None
        seen = b""
        while b"QCTL-GUEST-READY" not in seen:
            line = follow.stdout.readline()
            assert line, "--follow ended before the guest was ready"
            seen += line

        status = state.parent / "console-exit"
        command = " ".join(_qctl_argv("console", name, state=state)) + f"; echo $? > {status}"
        tmux("new-session", "-d", "-s", "qctl", "-x", "100", "-y", "20", "-c", str(REPO_ROOT))
        tmux("set-option", "-t", "qctl", "remain-on-exit", "on")
        tmux("respawn-pane", "-k", "-t", "qctl", command)
        _wait(lambda: "Escape character is ^]" in tmux.screen(), "the console to attach")
        tmux("send-keys", "-t", "qctl", "typed-in-tmux", "Enter")
        # The guest's tty echoes what it got: the keys made it there and back.
        _wait(lambda: "typed-in-tmux" in tmux.screen(), "the guest to echo the keys")
        tmux("send-keys", "-t", "qctl", "C-]")
        _wait(lambda: tmux.pane("pane_dead") == "1", "qctl console to leave on Ctrl-]", 15)
        assert status.read_text().strip() == "0", tmux.screen()

        log = run_qctl("console", name, "--log", state=state).stdout
        assert "QCTL-GUEST-READY" in log and "typed-in-tmux" in log

        run_qctl("stop", name, "--force", state=state)
        # --follow ends on its own once QEMU has exited, after printing everything.
        rest, _ = follow.communicate(timeout=30)
        assert follow.returncode == 0
        assert b"typed-in-tmux" in seen + rest
    finally:
        if follow.poll() is None:
            follow.kill()
            follow.wait()


def test_console_errors_are_one_line(tmp_path: Path) -> None:
    usage = run_qctl("console", "x", "--follow", state=tmp_path, check=False)
    assert usage.returncode == 2 and "--follow goes with --log" in usage.stderr
    absent = run_qctl("console", "ghost", "--log", state=tmp_path, check=False)
    assert absent.returncode == 8
    assert absent.stderr == "qctl: no domain named 'ghost' is running\n"


def test_a_domain_without_a_console_says_how_to_have_one(tmp_path: Path) -> None:
    state = tmp_path / "state"
    name = unique("nocon")
    domain = tmp_path / "domain.xml"
    domain.write_text(
        f"<domain type='qemu'><name>{name}</name><memory unit='MiB'>64</memory>"
        "<os><type machine='pc'>hvm</type></os></domain>"
    )
    run_qctl("start", str(domain), state=state)
    try:
        result = run_qctl("console", name, state=state, check=False)
        assert result.returncode == 8
        assert result.stderr == (
            f"qctl: domain {name!r} has no console: give it a <serial type='pty'/> to have one\n"
        )
    finally:
        run_qctl("stop", name, "--force", state=state)
