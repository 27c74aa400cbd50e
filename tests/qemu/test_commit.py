"""Group commit: lines handed in while a round runs go out in the next one, several durable
lines share one sync of the file system, a lone line syncs itself, and a failure reaches
only the lines it concerns."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from fakeqemu import FakeLauncher
from support import USER_NIC, start_fake

import qctl.qemu.commit as commit_module
import qctl.qemu.runtime as runtime_module
import qctl.qemu.writer as writer_module
from qctl import DetachResult, StateError
from qctl.qemu.commit import Committer, Written, committer, sync_file_system
from qctl.qemu.ledger import EntryState
from qctl.qemu.state import sync_file


def _stat(tmp_path: Path) -> Written:
    info = os.stat(tmp_path)
    return info, None


@pytest.fixture
def syncs(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every sync of a file system the committer makes (made for real too)."""
    made: list[Path] = []

    def sync(path: Path) -> None:
        made.append(path)
        sync_file_system(path)

    monkeypatch.setattr(commit_module, "sync_file_system", sync)
    return made


async def test_durable_lines_waiting_together_share_one_sync(
    tmp_path: Path, syncs: list[Path]
) -> None:
    committer = Committer(tmp_path)
    release = threading.Event()
    calls: list[tuple[str, bool]] = []

    def work(name: str, block: bool = False) -> Callable[[bool], Written]:
        def write(alone: bool) -> Written:
            calls.append((name, alone))
            if block:
                release.wait(5)
            return _stat(tmp_path)

        return write

    first = committer.write(work("first", block=True), sync=True)
    await asyncio.sleep(0.05)  # the first round is under way, and waits
    later = [
        committer.write(work(name), sync=sync)
        for name, sync in (("a", True), ("b", True), ("c", False))
    ]
    release.set()
    await asyncio.gather(first, *later)
    # the lone first line synced itself; the next round's two durable lines, one syncfs
    assert calls == [("first", True), ("a", False), ("b", False), ("c", False)]
    assert syncs == [tmp_path]


async def test_a_lone_line_syncs_itself(tmp_path: Path, syncs: list[Path]) -> None:
    committer = Committer(tmp_path)
    alone: list[bool] = []

    def write(flag: bool) -> Written:
        alone.append(flag)
        return _stat(tmp_path)

    assert await committer.write(write, sync=True) == _stat(tmp_path)
    assert await committer.write(write, sync=False) == _stat(tmp_path)
    assert alone == [True, False] and not syncs


async def test_a_failed_sync_fails_the_durable_lines_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(path: Path) -> None:
        raise OSError(5, "Input/output error", str(path))

    monkeypatch.setattr(commit_module, "sync_file_system", broken)
    committer = Committer(tmp_path)
    release = threading.Event()

    def blocked(alone: bool) -> Written:
        release.wait(5)
        return _stat(tmp_path)

    def failing(alone: bool) -> Written:
        raise StateError("refusing the journal: a symlink")

    def fine(alone: bool) -> Written:
        return _stat(tmp_path)

    first = committer.write(blocked, sync=False)
    await asyncio.sleep(0.05)
    round_two = [
        committer.write(fine, sync=True),
        committer.write(fine, sync=True),
        committer.write(fine, sync=False),
        committer.write(failing, sync=True),
    ]
    release.set()
    await first
    outcomes = await asyncio.gather(*round_two, return_exceptions=True)
    assert [type(outcome) for outcome in outcomes] == [OSError, OSError, tuple, StateError]


async def test_a_cancelled_writer_does_not_break_the_round(tmp_path: Path) -> None:
    committer = Committer(tmp_path)
    release = threading.Event()

    def blocked(alone: bool) -> Written:
        release.wait(5)
        return _stat(tmp_path)

    first = committer.write(blocked, sync=False)
    await asyncio.sleep(0.05)
    gone = committer.write(lambda alone: _stat(tmp_path), sync=True)
    kept = committer.write(lambda alone: _stat(tmp_path), sync=True)
    gone.cancel()
    release.set()
    await first
    assert await kept == _stat(tmp_path)


async def test_one_committer_per_state_root_and_loop(tmp_path: Path) -> None:
    assert committer(tmp_path / "a") is committer(tmp_path / "a")
    assert committer(tmp_path / "a") is not committer(tmp_path / "b")


def test_a_file_system_sync_says_what_failed(tmp_path: Path) -> None:
    sync_file_system(tmp_path)  # the real call
    with pytest.raises(FileNotFoundError):
        sync_file_system(tmp_path / "missing")


async def test_domains_of_one_root_detaching_at_once_share_their_syncs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, syncs: list[Path]
) -> None:
    monkeypatch.setattr(runtime_module, "in_memory", lambda path: False)  # a disk, wherever
    own: list[int] = []

    def sync(fd: int) -> None:
        own.append(fd)
        sync_file(fd)

    monkeypatch.setattr(writer_module, "sync_file", sync)
    launcher = FakeLauncher()
    domains = [await start_fake(tmp_path, f"g{n}", launcher=launcher) for n in range(6)]
    try:
        aliases = []
        for dom in domains:
            live = await dom.attach_device(USER_NIC)
            assert live.alias is not None
            aliases.append(live.alias)
        own.clear()
        syncs.clear()
        results = await asyncio.gather(
            *(dom.detach_device(alias, wait=0) for dom, alias in zip(domains, aliases, strict=True))
        )
        # every intent was durable before its device_del; together, far fewer syncs
        assert set(results) <= {DetachResult.PENDING, DetachResult.DETACHED}
        assert syncs and len(syncs) + len(own) < len(domains)
        for dom, alias, result in zip(domains, aliases, results, strict=True):
            entry = {e["alias"]: e for e in dom.directory.read_status()["ledger"]}.get(alias)
            if result is DetachResult.PENDING:
                assert entry is not None and entry["state"] == EntryState.DETACHING.value
    finally:
        for dom in domains:
            await dom.stop(force=True)
