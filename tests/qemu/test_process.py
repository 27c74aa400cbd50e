"""Spawning, exit detection and stopping; liveness of processes that are not our children."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from qctl.errors import ProcessError
from qctl.qemu.process import QEMUProcess, is_alive, log_tail, process_identity


async def test_spawn_failure_is_a_process_error(tmp_path: Path) -> None:
    with pytest.raises(ProcessError, match="cannot start"):
        await QEMUProcess.spawn([str(tmp_path / "nope")], log_path=tmp_path / "log")


async def test_exit_status_and_log_tail(tmp_path: Path) -> None:
    log = tmp_path / "log"
    proc = await QEMUProcess.spawn(
        [sys.executable, "-c", "import sys; sys.stderr.write('boom\\n'); sys.exit(3)"],
        log_path=log,
    )
    assert await proc.wait() == 3
    err = proc.failure("QEMU exited")
    assert err.returncode == 3 and "boom" in str(err)
    assert log_tail(log) == "boom"


async def test_only_passed_fds_are_inherited(tmp_path: Path) -> None:
    r, w = os.pipe()
    keep_r, keep_w = os.pipe()
    try:
        script = f"import os; os.write({keep_w}, b'x'); os.fstat({w})"
        proc = await QEMUProcess.spawn(
            [sys.executable, "-c", script], log_path=tmp_path / "log", pass_fds=[keep_w]
        )
        assert await proc.wait() == 1  # fstat of the unpassed fd fails
        assert os.read(keep_r, 1) == b"x"
    finally:
        for fd in (r, w, keep_r, keep_w):
            os.close(fd)


async def test_stop_escalates_to_kill(tmp_path: Path) -> None:
    ready_r, ready_w = os.pipe()
    script = (
        "import os, signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
        f" os.write({ready_w}, b'1'); time.sleep(60)"
    )
    try:
        proc = await QEMUProcess.spawn(
            [sys.executable, "-c", script], log_path=tmp_path / "log", pass_fds=[ready_w]
        )
        assert await asyncio.to_thread(os.read, ready_r, 1) == b"1"  # SIGTERM is ignored now
    finally:
        os.close(ready_r)
        os.close(ready_w)
    await proc.stop(grace=0.2)
    assert proc.returncode == -9
    await proc.stop()  # idempotent


async def test_foreign_process_liveness_and_wait(tmp_path: Path) -> None:
    child = await asyncio.to_thread(
        subprocess.Popen, [sys.executable, "-c", "import time; time.sleep(60)"]
    )
    try:
        identity = process_identity(child.pid)
        adopted = QEMUProcess(identity, tmp_path / "log")
        assert adopted.alive()
        child.terminate()
        # Not reaped yet: a zombie counts as gone, and wait() returns through the pidfd.
        assert await adopted.wait() is None
        assert not adopted.alive()
    finally:
        child.kill()
        child.wait()
    assert not is_alive(identity)


def test_identity_of_missing_process() -> None:
    with pytest.raises(ProcessError, match="does not exist"):
        process_identity(2**22 + 12345)
