"""Spawning, exit detection and stopping; liveness of processes that are not our children."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from support import gone_within

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


# -- die_with_owner ------------------------------------------------------------------------

_OWNER = """
import asyncio, sys
from pathlib import Path
from qctl.qemu.process import QEMUProcess

async def main() -> None:
    proc = await QEMUProcess.spawn(
        ["sleep", "60"], log_path=Path(sys.argv[1]), die_with_owner=sys.argv[2] == "1"
    )
    print(proc.pid, flush=True)
    await asyncio.sleep(60)

asyncio.run(main())
"""


@pytest.mark.parametrize("die_with_owner", [True, False])
def test_qemu_dies_with_its_owner_only_when_asked(tmp_path: Path, die_with_owner: bool) -> None:
    owner = subprocess.Popen(
        [sys.executable, "-c", _OWNER, str(tmp_path / "log"), "1" if die_with_owner else "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert owner.stdout is not None
    pid = int(owner.stdout.readline())
    try:
        owner.kill()
        owner.wait()
        assert gone_within(pid, 2.0) is die_with_owner
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def test_an_owner_thread_that_ends_does_not_kill_qemu(tmp_path: Path) -> None:
    """Only the owner process's end kills a ``die_with_owner`` QEMU: a loop run in a
    short-lived thread does not take its QEMU with it when the thread ends."""
    spawned: list[QEMUProcess] = []

    async def start() -> None:
        spawned.append(
            await QEMUProcess.spawn(["sleep", "60"], log_path=tmp_path / "log", die_with_owner=True)
        )

    thread = threading.Thread(target=asyncio.run, args=(start(),))
    thread.start()
    thread.join()
    proc = spawned[0]
    try:
        assert not gone_within(proc.pid, 0.5)
        assert is_alive(proc.identity)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
    assert gone_within(proc.pid, 5)


async def test_a_qemu_dying_with_its_owner_is_waited_for_and_stopped(tmp_path: Path) -> None:
    proc = await QEMUProcess.spawn(
        [sys.executable, "-c", "import sys; sys.exit(4)"],
        log_path=tmp_path / "log",
        die_with_owner=True,
    )
    assert await proc.wait() == 4 and proc.returncode == 4
    sleeper = await QEMUProcess.spawn(
        ["sleep", "60"], log_path=tmp_path / "log", die_with_owner=True
    )
    await sleeper.stop(grace=1.0)
    assert sleeper.returncode == -signal.SIGTERM
    with pytest.raises(ProcessError, match="cannot start"):
        await QEMUProcess.spawn(
            [str(tmp_path / "nope")], log_path=tmp_path / "log", die_with_owner=True
        )
