"""Status writes off the event loop: coalesced, durable on flush, and one domain's slow disk
never holds up another domain's job."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

import pytest
from fakeqemu import FakeLauncher
from support import USER_NIC, start_fake

import qctl.qemu.runtime as runtime_module
import qctl.qemu.writer as writer_module
from qctl import StateError
from qctl.qemu.commit import committer
from qctl.qemu.journal import Update
from qctl.qemu.state import DomainDir, append_to, atomic_write, sync_file
from qctl.qemu.writer import StatusWriter


@pytest.mark.parametrize("inline", [False, True], ids=["thread", "inline"])
async def test_changes_made_during_a_write_go_out_together(tmp_path: Path, inline: bool) -> None:
    path = tmp_path / "status.json"
    state = {"n": 0}
    renders: list[int] = []

    def render() -> Update:
        renders.append(state["n"])
        return Update(json.dumps(state).encode(), append=False)

    writer = StatusWriter(path, render, lambda *_: None, inline=inline)
    for n in range(1, 6):  # five changes in a row, no await between them
        state["n"] = n
        writer.changed()
    await writer.flush()
    assert json.loads(path.read_text()) == {"n": 5}
    assert len(renders) <= 2  # coalesced: not one write per change
    await writer.aclose()


@pytest.mark.parametrize("inline", [False, True], ids=["thread", "inline"])
async def test_a_failed_write_is_raised_by_flush(tmp_path: Path, inline: bool) -> None:
    failed: list[bool] = []
    writer = StatusWriter(
        tmp_path / "missing" / "status.json",
        lambda: Update(b"{}", append=False),
        lambda *_: None,
        failed=lambda: failed.append(True),
        inline=inline,
    )
    writer.changed()
    await asyncio.sleep(0)  # the write due fails, and is kept for the flush
    with pytest.raises(StateError, match="cannot write"):
        await writer.flush()
    assert failed  # the renderer is told: its next write is the whole file
    (tmp_path / "missing").mkdir()
    await writer.flush()  # written now
    assert (tmp_path / "missing" / "status.json").read_bytes() == b"{}"
    await writer.aclose()


async def test_an_inline_change_is_written_on_the_loop_s_next_turn(tmp_path: Path) -> None:
    path = tmp_path / "status.json"
    writer = StatusWriter(path, lambda: Update(b"{}", append=False), lambda *_: None, inline=True)
    writer.changed()
    assert not path.exists()  # not during the turn that changed the books…
    await asyncio.sleep(0)
    assert path.read_bytes() == b"{}"  # …but right after it, with nobody flushing
    await writer.aclose()


async def test_a_slow_disk_on_one_domain_does_not_delay_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runtime_module, "in_memory", lambda path: False)  # a disk, wherever
    launcher = FakeLauncher()
    slow = await start_fake(tmp_path / "a", "slow", launcher=launcher)
    fast = await start_fake(tmp_path / "b", "fast", launcher=launcher)
    def slow_disk(file: Path | int) -> None:
        path = Path(os.readlink(f"/proc/self/fd/{file}")) if isinstance(file, int) else file
        if path.parent == slow.directory.path:
            assert threading.current_thread() is not threading.main_thread()
            time.sleep(1.0)  # in the writer's thread: a disk that takes a second

    def whole(path: Path, data: bytes) -> os.stat_result:
        slow_disk(path)
        return atomic_write(path, data)

    def sync(fd: int) -> None:
        slow_disk(fd)
        sync_file(fd)

    # every wait for the slow domain's disk: a whole write, a journal line's sync
    monkeypatch.setattr(writer_module, "atomic_write", whole)
    monkeypatch.setattr(writer_module, "sync_file", sync)
    try:
        began = time.monotonic()
        slow_attach = asyncio.create_task(slow.attach_device(USER_NIC))
        await asyncio.sleep(0.05)  # the slow domain's first write is under way
        fast_began = time.monotonic()
        await fast.attach_device(USER_NIC)
        fast_took = time.monotonic() - fast_began
        await slow_attach
        slow_took = time.monotonic() - began
    finally:
        monkeypatch.undo()
        await slow.stop(force=True)
        await fast.stop(force=True)
    assert slow_took >= 1.0  # it did wait for its own disk…
    assert fast_took < 0.5, fast_took  # …and the other domain did not


@pytest.mark.parametrize("memory", [True, False], ids=["tmpfs", "disk"])
async def test_writes_stay_in_the_loop_only_on_a_file_system_in_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, memory: bool
) -> None:
    monkeypatch.setattr(runtime_module, "in_memory", lambda path: memory)
    threads: dict[str, list[int]] = {"whole": [], "line": [], "sync": []}

    def whole(path: Path, data: bytes) -> os.stat_result:
        threads["whole"].append(threading.get_ident())
        return atomic_write(path, data)

    def line(fd: int, data: bytes) -> os.stat_result:
        threads["line"].append(threading.get_ident())
        return append_to(fd, data)

    def sync(fd: int) -> None:
        threads["sync"].append(threading.get_ident())
        sync_file(fd)

    monkeypatch.setattr(writer_module, "atomic_write", whole)
    monkeypatch.setattr(writer_module, "append_to", line)
    monkeypatch.setattr(writer_module, "sync_file", sync)
    dom = await start_fake(tmp_path, "mem")
    try:
        live = await dom.attach_device(USER_NIC)  # the whole file first, then the journal
        assert live.alias is not None
        await dom.detach_device(live.alias)  # its intent is a line that must be on disk
    finally:
        await dom.stop(force=True)
    loop = threading.get_ident()
    assert threads["whole"] and threads["line"]
    every = threads["whole"] + threads["line"] + threads["sync"]
    assert {thread == loop for thread in every} == {memory}
    # a journal in memory is never synced (no device); on a disk an intent is
    assert bool(threads["sync"]) is not memory


def test_a_directory_gone_meanwhile_is_written_through_a_thread(tmp_path: Path) -> None:
    # statfs fails for a state directory removed while a handle is made: the thread path,
    # whose write then says what is wrong, rather than an OSError out of the constructor
    assert runtime_module._in_memory(DomainDir(tmp_path / "gone")) is False


async def test_a_durable_flush_syncs_what_was_only_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[bytes | str] = []

    def line(fd: int, data: bytes) -> os.stat_result:
        calls.append(data)
        return append_to(fd, data)

    def sync(fd: int) -> None:
        calls.append("sync")
        sync_file(fd)

    monkeypatch.setattr(writer_module, "append_to", line)
    monkeypatch.setattr(writer_module, "sync_file", sync)
    data = b'{"gen":"g"}\n'
    updates = iter([Update(b"{}", append=False), Update(data, append=True), Update(b"", True)])
    writer = StatusWriter(tmp_path / "status.json", lambda: next(updates), lambda *_: None)
    writer.changed()
    await writer.flush()  # the whole file: synced as it is written
    writer.changed()
    await writer.flush(durable=False)  # a line other processes read, not yet on disk
    assert calls == [data]
    await writer.flush()  # nothing new to write, but that line must be on disk now
    assert calls == [data, b"", "sync"]
    await writer.aclose()


@pytest.mark.parametrize("inline", [False, True], ids=["thread", "inline"])
async def test_a_journal_refused_fails_every_flush_waiting_and_the_renderer_is_told(
    tmp_path: Path, inline: bool
) -> None:
    path, journal = tmp_path / "status.json", tmp_path / "status.journal"
    decoy = tmp_path / "decoy"
    decoy.write_bytes(b"")
    updates = iter([Update(b"{}", append=False)])
    failed: list[bool] = []

    def render() -> Update:
        return next(updates, Update(b'{"gen":"g"}\n', append=True))

    writer = StatusWriter(
        path, render, lambda *_: None, failed=lambda: failed.append(True), inline=inline
    )
    writer.changed()
    await writer.flush()  # whole: it removes the journal there was
    await asyncio.sleep(0.01)  # the write scheduled, or the task, has ended
    journal.symlink_to(decoy)  # planted: never written through
    writer.changed()
    flushes = (writer.flush(), writer.flush(durable=False))
    results = await asyncio.gather(*flushes, return_exceptions=True)
    assert all(isinstance(r, StateError) and "symlink" in str(r) for r in results), results
    assert failed and decoy.read_bytes() == b""
    journal.unlink()
    await writer.flush()  # written now
    assert journal.read_bytes() == b'{"gen":"g"}\n'
    await writer.aclose()


async def test_a_line_abandoned_by_its_committer_fails_the_flush_not_hangs_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "status.json"
    updates = iter([Update(b"{}", append=False)])

    def render() -> Update:
        return next(updates, Update(b'{"gen":"g"}\n', append=True))

    failed: list[bool] = []
    writer = StatusWriter(
        path, render, lambda *_: None, failed=lambda: failed.append(True), group=tmp_path
    )
    writer.changed()
    await writer.flush()  # the whole file, in the writer's own thread
    writer.changed()
    for _ in range(3):  # the writer hands its line to the committer, whose task is made
        await asyncio.sleep(0)
    rounds = committer(tmp_path)._task
    assert rounds is not None
    rounds.cancel()  # as when the loop shuts down
    async with asyncio.timeout(2):
        with pytest.raises(StateError, match="abandoned"):
            await writer.flush()
    assert failed  # the renderer is told: its next write is whole
    await writer.aclose()


async def _shielded_flush_under_way(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[StatusWriter, asyncio.Task[None]]:
    """A writer of whole files whose disk takes 0.2 s a write, and a shielded flush waiting
    for the write under way."""

    def slow(path: Path, data: bytes) -> os.stat_result:
        time.sleep(0.2)
        return atomic_write(path, data)

    monkeypatch.setattr(writer_module, "atomic_write", slow)
    writer = StatusWriter(path, lambda: Update(b"{}", append=False), lambda *_: None)
    writer.changed()
    flush = asyncio.create_task(writer.flush(durable=False, shielded=True))
    await asyncio.sleep(0.05)
    return writer, flush


async def test_a_shielded_flush_cancelled_returns_only_once_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "status.json"
    writer, flush = await _shielded_flush_under_way(path, monkeypatch)
    flush.cancel()
    with pytest.raises(asyncio.CancelledError):
        await flush
    assert path.read_bytes() == b"{}"  # the cancellation came through once it was written
    await writer.aclose()


async def test_a_shielded_flush_is_answered_when_its_writer_is_cancelled_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer, flush = await _shielded_flush_under_way(tmp_path / "status.json", monkeypatch)
    task = writer._task
    assert task is not None
    flush.cancel()  # both, as when the loop shuts down
    task.cancel()
    # answered, never left waiting for a writer that is gone (which a shielded wait would
    # be for good: no timeout can cut it short)
    done, _ = await asyncio.wait({flush}, timeout=2)
    assert done, "the shielded flush was left waiting"
    with pytest.raises(StateError, match="stopped"):
        await flush
    await writer.aclose()  # and closing is not cut short by the writer's cancellation
    assert writer.closed


async def test_a_flush_of_a_later_change_is_written_after_the_committer_abandons_a_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "status.json"
    lines = iter([b'{"gen":"g","n":2}\n', b'{"gen":"g","n":3}\n'])
    updates = iter([Update(b"{}", append=False)])

    def render() -> Update:
        return next(updates, None) or Update(next(lines), append=True)

    entered, release = threading.Event(), threading.Event()

    def held_up(fd: int, data: bytes) -> os.stat_result:
        if b'"n":2' in data:
            entered.set()
            release.wait(5)  # the first line's round stays in its thread
        return append_to(fd, data)

    monkeypatch.setattr(writer_module, "append_to", held_up)
    writer = StatusWriter(path, render, lambda *_: None, group=tmp_path)
    writer.changed()
    await writer.flush()
    writer.changed()  # version 2: its line goes to the committer, whose round is held up…
    assert await asyncio.to_thread(entered.wait, 2)
    writer.changed()  # …and version 3 comes meanwhile
    later = asyncio.create_task(writer.flush(durable=False))
    await asyncio.sleep(0)
    rounds = committer(tmp_path)._task
    assert rounds is not None
    rounds.cancel()  # the line of version 2 is abandoned
    try:
        async with asyncio.timeout(2):
            await later  # version 3 is written all the same
    finally:
        release.set()
    assert b'"n":3' in (tmp_path / "status.journal").read_bytes()
    await writer.aclose()


def fds_open_on(path: Path) -> int:
    """How many fds of this process are open on the file ``path`` (deleted or not)."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # the fd listdir used, closed since
            continue
        count += target in (str(path), f"{path} (deleted)")
    return count


async def test_an_inline_writer_keeps_its_journal_open_until_a_whole_write_or_its_end(
    tmp_path: Path,
) -> None:
    path, journal = tmp_path / "status.json", tmp_path / "status.journal"
    updates = [Update(b"{}", append=False), Update(b"a\n", append=True)]
    updates += [Update(b"b\n", append=True), Update(b"{}", append=False)]
    updates += [Update(b"c\n", append=True)]
    pending = iter(updates)
    writer = StatusWriter(path, lambda: next(pending), lambda *_: None, inline=True)
    for _ in range(3):
        writer.changed()
        await writer.flush()
    assert journal.read_bytes() == b"a\nb\n"
    assert fds_open_on(journal) == 1  # one open for both lines, kept
    writer.changed()
    await writer.flush()  # whole: the journal is removed, and closed
    assert not journal.exists() and fds_open_on(journal) == 0
    writer.changed()
    await writer.flush()
    assert journal.read_bytes() == b"c\n" and fds_open_on(journal) == 1  # the new one
    await writer.aclose()
    assert fds_open_on(journal) == 0


async def test_a_job_on_a_domain_stopped_elsewhere_fails_its_write_on_tmpfs() -> None:
    state = Path(tempfile.mkdtemp(prefix="qctl-test-", dir="/dev/shm"))
    try:
        dom = await start_fake(state, "gone")
        try:
            live = await dom.attach_device(USER_NIC)  # journal lines: the journal stays open
            assert live.alias is not None
            directory = dom.directory.path
            assert runtime_module._in_memory(dom.directory)
            shutil.rmtree(directory)  # what a stop by another process leaves
            with pytest.raises(StateError):
                await dom.detach_device(live.alias, wait=0)  # its intent cannot be written
            assert not directory.exists()  # no write was made into a journal now gone
        finally:
            await dom.aclose()
    finally:
        shutil.rmtree(state, ignore_errors=True)
