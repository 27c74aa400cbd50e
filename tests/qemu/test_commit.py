"""Group commit: lines handed in while a round runs go out in the next one, several durable
lines share one sync of their file system, a lone line syncs itself, a line that need not be
durable is not held up by the sync, and a failure reaches only the lines it concerns."""

from __future__ import annotations

import asyncio
import functools
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
from qctl import DetachResult, Domain, StateError
from qctl.host import sync_file_system
from qctl.qemu.commit import Committer, Work, Written, committer
from qctl.qemu.ledger import EntryState
from qctl.qemu.state import append_to, sync_file


def _stat(tmp_path: Path) -> Written:
    info = os.stat(tmp_path)
    return info, None


def _line(
    tmp_path: Path, name: str, log: list[tuple[str, bool]], block: threading.Event | None = None
) -> Work:
    """A line's write as the writer makes it: appended to a file of its own, and when the
    committer holds it for a shared sync, left open for it."""

    def write(held: list[int] | None) -> Written:
        log.append((name, held is None))
        if block is not None:
            block.wait(5)
        fd = os.open(tmp_path / name, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.write(fd, b"line\n")
        if held is not None:
            held.append(fd)
        else:
            os.close(fd)
        return _stat(tmp_path)

    return write


def _note(events: list[tuple[str, str]], event: tuple[str, str], _alias: str) -> None:
    events.append(event)


def _on_device_del(
    monkeypatch: pytest.MonkeyPatch, dom: Domain, note: Callable[[str], object]
) -> None:
    """Note each ``device_del`` the domain sends QEMU (then send it)."""
    real = dom.monitor.device_del

    async def device_del(alias: str) -> None:
        note(alias)
        await real(alias)

    monkeypatch.setattr(dom.monitor, "device_del", device_del)


@pytest.fixture
def syncs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every sync of a file system the committer makes (made for real too): the file it
    was made through."""
    made: list[str] = []

    def sync(fd: int) -> None:
        made.append(os.readlink(f"/proc/self/fd/{fd}"))
        sync_file_system(fd)

    monkeypatch.setattr(commit_module, "sync_file_system", sync)
    return made


async def test_durable_lines_waiting_together_share_one_sync(
    tmp_path: Path, syncs: list[str]
) -> None:
    committer = Committer(tmp_path)
    release = threading.Event()
    log: list[tuple[str, bool]] = []
    first = committer.write(_line(tmp_path, "first", log, release), sync=True)
    await asyncio.sleep(0.05)  # the first round is under way, and waits
    later = [
        committer.write(_line(tmp_path, name, log), sync=sync)
        for name, sync in (("a", True), ("b", True), ("c", False))
    ]
    release.set()
    await asyncio.gather(first, *later)
    # the lone first line synced itself; the next round's two durable lines, one syncfs
    # made through the first of them (opened before any of the round's appends)
    assert log == [("first", True), ("a", False), ("b", False), ("c", True)]
    assert syncs == [str(tmp_path / "a")]


async def test_a_lone_line_syncs_itself(tmp_path: Path, syncs: list[str]) -> None:
    committer = Committer(tmp_path)
    log: list[tuple[str, bool]] = []
    assert await committer.write(_line(tmp_path, "a", log), sync=True) == _stat(tmp_path)
    assert await committer.write(_line(tmp_path, "b", log), sync=False) == _stat(tmp_path)
    assert log == [("a", True), ("b", True)] and not syncs


async def test_a_line_that_need_not_be_durable_does_not_wait_for_the_sync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    syncing, release = threading.Event(), threading.Event()

    def slow(fd: int) -> None:
        syncing.set()
        release.wait(5)

    monkeypatch.setattr(commit_module, "sync_file_system", slow)
    committer = Committer(tmp_path)
    log: list[tuple[str, bool]] = []
    durable = [committer.write(_line(tmp_path, n, log), sync=True) for n in ("a", "b")]
    visible = committer.write(_line(tmp_path, "c", log), sync=False)
    try:
        async with asyncio.timeout(2):
            await visible  # handed back while the file system's sync still runs…
        assert await asyncio.to_thread(syncing.wait, 2)
        assert not any(future.done() for future in durable)  # …which the others wait for
    finally:
        release.set()
    await asyncio.gather(*durable)


async def test_a_failed_sync_fails_the_durable_lines_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(commit_module, "sync_file_system", broken)
    committer = Committer(tmp_path)
    release = threading.Event()
    log: list[tuple[str, bool]] = []

    def failing(held: list[int] | None) -> Written:
        raise StateError("refusing the journal: a symlink")

    def buggy(held: list[int] | None) -> Written:
        raise AssertionError("a journal line follows a whole write")

    first = committer.write(_line(tmp_path, "first", log, release), sync=False)
    await asyncio.sleep(0.05)
    round_two = [
        committer.write(_line(tmp_path, "a", log), sync=True),
        committer.write(_line(tmp_path, "b", log), sync=True),
        committer.write(_line(tmp_path, "c", log), sync=False),
        committer.write(failing, sync=True),
        committer.write(buggy, sync=False),
    ]
    release.set()
    await first
    outcomes = await asyncio.gather(*round_two, return_exceptions=True)
    kinds = [type(outcome) for outcome in outcomes]
    assert kinds == [OSError, OSError, tuple, StateError, AssertionError]
    assert len(os.listdir("/proc/self/fd")) < 64  # the files held for the sync are closed
    assert {"a", "b"} <= set(os.listdir(tmp_path))


async def test_a_line_whose_writer_was_cancelled_is_skipped(tmp_path: Path) -> None:
    committer = Committer(tmp_path)
    release = threading.Event()
    log: list[tuple[str, bool]] = []
    first = committer.write(_line(tmp_path, "first", log, release), sync=False)
    await asyncio.sleep(0.05)
    gone = committer.write(_line(tmp_path, "gone", log), sync=True)
    kept = committer.write(_line(tmp_path, "kept", log), sync=True)
    gone.cancel()
    release.set()
    await first
    assert await kept == _stat(tmp_path)
    assert [name for name, _ in log] == ["first", "kept"]  # the cancelled line: not written


async def test_one_committer_per_state_root_and_loop(tmp_path: Path) -> None:
    here = committer(tmp_path / "a")
    assert committer(tmp_path / "a") is here
    assert committer(tmp_path / "b") is not here

    def elsewhere() -> Committer:
        async def make() -> Committer:
            return committer(tmp_path / "a")

        return asyncio.run(make())

    assert await asyncio.to_thread(elsewhere) is not here  # another loop, its own


def test_a_file_system_sync_says_what_failed(tmp_path: Path) -> None:
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        sync_file_system(fd)  # the real call
    finally:
        os.close(fd)
    with pytest.raises(OSError, match="Bad file descriptor"):
        sync_file_system(fd)


async def test_domains_of_one_root_detaching_at_once_share_their_syncs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runtime_module, "in_memory", lambda path: False)  # a disk, wherever
    events: list[tuple[str, str]] = []  # in the order they happened, threads included

    def group_sync(fd: int) -> None:
        sync_file_system(fd)
        events.append(("sync", "all"))

    def own_sync(fd: int) -> None:
        sync_file(fd)
        events.append(("sync", os.readlink(f"/proc/self/fd/{fd}")))

    def line(fd: int, data: bytes) -> os.stat_result:
        if b'"detaching"' in data:
            events.append(("intent", os.readlink(f"/proc/self/fd/{fd}")))
        return append_to(fd, data)

    monkeypatch.setattr(commit_module, "sync_file_system", group_sync)
    monkeypatch.setattr(writer_module, "sync_file", own_sync)
    monkeypatch.setattr(writer_module, "append_to", line)
    launcher = FakeLauncher()
    domains = [await start_fake(tmp_path, f"g{n}", launcher=launcher) for n in range(6)]
    try:
        aliases = []
        for dom in domains:
            live = await dom.attach_device(USER_NIC)
            assert live.alias is not None
            aliases.append(live.alias)
            event = ("device_del", str(dom.directory.journal_file))
            _on_device_del(monkeypatch, dom, functools.partial(_note, events, event))
        events.clear()
        results = await asyncio.gather(
            *(dom.detach_device(alias, wait=0) for dom, alias in zip(domains, aliases, strict=True))
        )
        # every intent was on disk before its device_del: a sync came between them…
        for dom in domains:
            journal = str(dom.directory.journal_file)
            intent = events.index(("intent", journal))
            asked = events.index(("device_del", journal))
            between = events[intent:asked]
            assert ("sync", "all") in between or ("sync", journal) in between, events
        # …and together the domains needed far fewer syncs than one each
        assert ("sync", "all") in events
        assert sum(kind == "sync" for kind, _ in events) < len(domains)
        for dom, alias, result in zip(domains, aliases, results, strict=True):
            assert result is DetachResult.PENDING
            entry = {e["alias"]: e for e in dom.directory.read_status()["ledger"]}[alias]
            assert entry["state"] == EntryState.DETACHING.value
    finally:
        for dom in domains:
            await dom.stop(force=True)


async def test_a_failed_group_sync_fails_the_steps_before_qemu_is_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runtime_module, "in_memory", lambda path: False)
    launcher = FakeLauncher()
    domains = [await start_fake(tmp_path, f"f{n}", launcher=launcher) for n in range(3)]
    try:
        aliases = []
        asked: list[str] = []
        for dom in domains:
            live = await dom.attach_device(USER_NIC)
            assert live.alias is not None
            aliases.append(live.alias)
            _on_device_del(monkeypatch, dom, asked.append)

        def broken(fd: int) -> None:
            raise OSError(5, "Input/output error")

        monkeypatch.setattr(commit_module, "sync_file_system", broken)
        monkeypatch.setattr(writer_module, "sync_file", broken)
        detaches = (dom.detach_device(a, wait=0) for dom, a in zip(domains, aliases, strict=True))
        results = await asyncio.gather(*detaches, return_exceptions=True)
        assert all(isinstance(r, StateError) for r in results), results
        assert not asked  # no intent on disk: QEMU was never asked
        monkeypatch.setattr(commit_module, "sync_file_system", sync_file_system)
        monkeypatch.setattr(writer_module, "sync_file", sync_file)
        for dom, alias in zip(domains, aliases, strict=True):  # the books are whole again
            assert dom.ledger.get(alias) is not None
            assert await dom.detach_device(alias, wait=0) is DetachResult.PENDING
            entry = {e["alias"]: e for e in dom.directory.read_status()["ledger"]}[alias]
            assert entry["state"] == EntryState.DETACHING.value
        assert sorted(asked) == sorted(aliases)
    finally:
        for dom in domains:
            await dom.stop(force=True)
