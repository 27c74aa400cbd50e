"""State root, domain directories, atomic status writes and the per-domain lock."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

import pytest

from qctl.errors import StateError
from qctl.qemu.state import StateRoot, atomic_write, default_state_root


def test_default_root_prefers_environment() -> None:
    assert default_state_root({"QCTL_STATE_DIR": "/tmp/x"}) == Path("/tmp/x")


def test_default_root_for_root_user_is_run_qctl() -> None:
    if os.geteuid() != 0:
        pytest.skip("only meaningful as root")
    assert default_state_root({}) == Path("/run/qctl")


def test_domain_dir_is_private_and_status_round_trips(tmp_path: Path) -> None:
    root = StateRoot(tmp_path / "state")
    root.ensure()
    dom = root.domain("vm1")
    dom.create()
    dom.write_status({"name": "vm1", "ledger": []})
    assert stat.S_IMODE(dom.path.stat().st_mode) == 0o700
    assert stat.S_IMODE(dom.status_file.stat().st_mode) == 0o600
    assert dom.read_status() == {"name": "vm1", "ledger": []}
    assert root.names() == ["vm1"]
    with pytest.raises(StateError, match="already running"):
        dom.create()
    dom.remove()
    dom.remove()  # idempotent
    assert root.names() == []


def test_remove_takes_the_console_log_too(tmp_path: Path) -> None:
    dom = StateRoot(tmp_path).domain("vm1")
    dom.create()
    assert dom.console_log.name == "console.log"
    dom.console_log.write_bytes(b"QCTL-GUEST-READY\n")
    dom.remove()
    assert not dom.path.exists()


def test_bad_domain_name_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StateError, match="not usable"):
        StateRoot(tmp_path).domain("../etc")


def test_missing_and_damaged_status(tmp_path: Path) -> None:
    dom = StateRoot(tmp_path).domain("vm")
    with pytest.raises(StateError, match="no domain named 'vm'"):
        dom.read_status()
    dom.make()
    dom.status_file.write_text("{not json")
    with pytest.raises(StateError, match="unreadable"):
        dom.read_status()


def test_atomic_write_leaves_no_temp_file_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "f"
    atomic_write(target, b"one")
    with pytest.raises(TypeError):
        atomic_write(target, "not bytes")  # type: ignore[arg-type]
    assert target.read_bytes() == b"one"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]


async def test_lock_excludes_a_second_holder(tmp_path: Path) -> None:
    dom = StateRoot(tmp_path).domain("vm")
    dom.make()
    order: list[str] = []

    async def second() -> None:
        lock = await dom.lock()
        order.append("second")
        lock.release()

    first = await dom.lock()
    task = asyncio.create_task(second())
    await asyncio.sleep(0.2)
    order.append("first-done")
    first.release()
    first.release()  # idempotent
    await task
    assert order == ["first-done", "second"]


async def test_lock_wait_is_bounded_and_leaves_no_fd(tmp_path: Path) -> None:
    dom = StateRoot(tmp_path).domain("vm")
    dom.make()
    held = await dom.lock()
    fds_before = len(os.listdir("/proc/self/fd"))
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):
            await dom.lock()
    assert len(os.listdir("/proc/self/fd")) == fds_before
    held.release()
    (await dom.lock()).release()  # free again afterwards
