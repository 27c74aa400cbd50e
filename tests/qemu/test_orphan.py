"""A ``start`` killed after QEMU was spawned (real QEMU, paused; no guest needed), or
before it wrote its intent, leaves nothing that the next command cannot find and end."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from support import processes_naming, unique

from qctl import Domain, StateError, parse_domain
from qctl.host import Netlink
from qctl.qemu import orphan
from qctl.qemu.reconnect import _reap
from qctl.qemu.startup import _made_and_locked
from qctl.qemu.state import DomainDir, StateRoot

CHILD = """
import asyncio, os, sys
from qctl import Domain, Launcher, parse_domain

class DieAfterSpawn(Launcher):
    async def spawn(self, argv, **kwargs):
        await super().spawn(argv, **kwargs)
        os._exit(9)  # as kill -9 of `qctl start` right after QEMU was spawned

async def main():
    defn = parse_domain(open(sys.argv[1]).read())
    await Domain.start(defn, state_root=sys.argv[2], launcher=DieAfterSpawn())

asyncio.run(main())
"""


def _domain(name: str, tap: str) -> str:
    return f"""<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>64</memory>
  <os><type arch='x86_64' machine='q35'>hvm</type></os>
  <devices>
    <interface type='ethernet'><mac address='52:54:00:cc:00:01'/><target dev='{tap}'/>
      <model type='virtio'/></interface>
  </devices>
</domain>"""


@pytest.mark.qemu
@pytest.mark.parametrize("then", ["connect", "start"])
async def test_a_start_killed_after_spawning_is_found_and_ended(
    tmp_path: Path, tun: None, netlink: Netlink, then: str
) -> None:
    name, tap = unique("orph"), unique("qorph")
    xml = tmp_path / "domain.xml"
    xml.write_text(_domain(name, tap))
    state = tmp_path / "state"
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD, str(xml), str(state)
    )
    assert await child.wait() == 9
    pidfile = str(state / "domains" / name / "qemu.pid")
    assert processes_naming(pidfile), "the orphan QEMU should be running"
    assert await netlink.get_link(tap) is not None  # it holds the tap
    [info] = Domain.list(state)
    assert info.name == name and "cut short" in (info.error or "")

    if then == "connect":
        with pytest.raises(StateError, match="was cut short"):
            await Domain.connect(name, state_root=state)
    else:  # a second start of the name ends the orphan, then starts afresh
        dom = await Domain.start(parse_domain(xml.read_text()), state_root=state)
        await dom.stop(force=True)
    for _ in range(100):
        if not processes_naming(pidfile):
            break
        await asyncio.sleep(0.05)
    assert not processes_naming(pidfile)
    assert await netlink.get_link(tap) is None
    assert Domain.list(state) == []


async def _left_before_intent(root: StateRoot, name: str) -> DomainDir:
    """What a start killed before its intent leaves: its directory, the lock it took (and
    let go by dying), and the intent's temporary file."""
    directory = root.domain(name)
    directory.make()
    (await directory.lock()).release()
    (directory.path / f".starting.{os.getpid()}.7").write_bytes(b'{"pid"')
    return directory


async def test_a_start_killed_before_its_intent_is_listed_and_removed(tmp_path: Path) -> None:
    root = StateRoot(tmp_path / "state")
    directory = await _left_before_intent(root, "early")
    [info] = Domain.list(root.path)
    assert info.name == "early" and "cut short" in (info.error or "")
    with pytest.raises(StateError, match="was cut short"):
        await Domain.connect("early", state_root=root.path)
    assert not directory.path.exists()
    assert Domain.list(root.path) == []


async def test_a_start_before_its_intent_is_left_alone_while_it_holds_the_lock(
    tmp_path: Path,
) -> None:
    root = StateRoot(tmp_path / "state")
    directory = await _left_before_intent(root, "busy")
    lock = await directory.lock()  # a live start, about to write its intent
    try:
        assert Domain.list(root.path) == []
        with pytest.raises(StateError) as raised:
            await Domain.connect("busy", state_root=root.path)
        assert "cut short" not in str(raised.value)
        assert directory.path.is_dir()
    finally:
        lock.release()


@pytest.mark.parametrize("found", ["notes.txt", "starting"])
async def test_a_directory_with_more_than_qctl_leaves_is_not_taken_for_one(
    tmp_path: Path, found: str
) -> None:
    root = StateRoot(tmp_path / "state")
    directory = await _left_before_intent(root, "more")
    (directory.path / found).write_text(f'{{"pid": {os.getpid()}, "start_time": 0}}')
    if found == "starting":  # an intent: its process (this one's pid, not its start) is dead
        with pytest.raises(StateError, match="was cut short"):
            await Domain.connect("more", state_root=root.path)
        assert not directory.path.exists()
        return
    with pytest.raises(StateError) as raised:
        await Domain.connect("more", state_root=root.path)
    assert "cut short" not in str(raised.value)
    assert (directory.path / found).exists()


async def test_a_lock_whose_directory_went_while_waiting_is_refused(tmp_path: Path) -> None:
    directory = StateRoot(tmp_path / "state").domain("gone")
    directory.make()
    held = await directory.lock()
    waiting = asyncio.create_task(directory.lock())
    await asyncio.sleep(0.1)  # it has the lock file open and waits for the flock
    directory.remove()
    held.release()
    with pytest.raises(StateError, match="no domain named 'gone'"):
        await waiting


async def test_a_start_makes_its_directory_again_when_removed_before_it_locked(
    tmp_path: Path,
) -> None:
    directory = StateRoot(tmp_path / "state").domain("again")
    directory.make()
    reaper = await directory.lock()  # another command, taking it for a start cut short
    starting = asyncio.create_task(_made_and_locked(directory))
    await asyncio.sleep(0.1)
    directory.remove()
    reaper.release()
    lock = await starting
    try:
        assert directory.lock_file_path().exists()  # the lock is on the new directory's file
        assert directory.job_running()
    finally:
        lock.release()


def test_a_file_among_the_domains_is_not_listed_as_a_start(tmp_path: Path) -> None:
    root = StateRoot(tmp_path / "state")
    root.ensure()
    (root.path / "domains" / "stray").write_text("not a directory")
    assert Domain.list(root.path) == []


async def test_a_reaper_that_finds_the_start_finished_says_nothing(tmp_path: Path) -> None:
    """Seen cut short without the lock, but a live start held it and finished meanwhile."""
    directory = StateRoot(tmp_path / "state").domain("done")
    directory.make()
    directory.write_status({"name": "done", "ledger": []})
    await _reap(directory)  # returns: the caller raises its own error
    assert directory.status_file.exists()


async def test_a_start_killed_before_its_lock_file_is_removed(tmp_path: Path) -> None:
    root = StateRoot(tmp_path / "state")
    directory = root.domain("empty")
    directory.make()  # killed here: the lock file is not made yet
    assert not directory.job_running()
    [info] = Domain.list(root.path)
    assert info.name == "empty" and "cut short" in (info.error or "")
    with pytest.raises(StateError, match="was cut short"):
        await Domain.connect("empty", state_root=root.path)
    assert not directory.path.exists()


async def test_a_connect_does_not_wait_for_the_lock_of_what_looks_cut_short(
    tmp_path: Path,
) -> None:
    directory = await _left_before_intent(StateRoot(tmp_path / "state"), "held")
    lock = await directory.lock()  # a live start, between its lock and its intent
    try:
        async with asyncio.timeout(1):
            await _reap(directory)  # returns: the caller raises its own error
        assert directory.path.is_dir()
    finally:
        lock.release()


async def test_two_starts_waiting_while_the_directory_is_removed_both_get_the_name(
    tmp_path: Path,
) -> None:
    directory = StateRoot(tmp_path / "state").domain("two")
    directory.make()
    reaper = await directory.lock()
    first = asyncio.create_task(_made_and_locked(directory))
    second = asyncio.create_task(_made_and_locked(directory))
    await asyncio.sleep(0.1)
    directory.remove()
    reaper.release()
    done, _ = await asyncio.wait([first, second], return_when=asyncio.FIRST_COMPLETED)
    [winner] = done
    other = second if winner is first else first
    await asyncio.sleep(0.2)
    assert not other.done()  # it waits for the first start's lock
    (await winner).release()
    (await other).release()


async def test_a_new_start_reaps_nothing_it_need_not_look_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A directory with nothing but the lock (and a temporary file) had no QEMU spawned
    for it: no walk of /proc."""

    def walked(pidfile: Path) -> list[int]:
        raise AssertionError(f"looked for QEMUs naming {pidfile}")

    monkeypatch.setattr(orphan, "_qemus_of", walked)
    directory = await _left_before_intent(StateRoot(tmp_path / "state"), "fresh")
    lock = await directory.lock()
    try:
        assert await orphan.reap_cut_start(directory, remove=False)
        assert directory.path.is_dir()
    finally:
        lock.release()


def _fill(directory: DomainDir) -> None:
    """A running domain's directory, with every file qctl puts there."""
    directory.make()
    names = ["qemu.log", "qemu.pid", "qmp.sock", "qmp-2.sock", "console.log", "abort"]
    for name in [*names, "status.json", "status.journal", "lock", ".status.json.1.2"]:
        (directory.path / name).write_text("")


async def test_a_removal_cut_short_took_the_status_file_first_and_the_rest_is_reaped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its ledger was released: a status file left behind would be released again (a
    device another domain took since). What is left is removed by the next command, after
    looking for a QEMU (there was one)."""
    root = StateRoot(tmp_path / "state")
    directory = root.domain("half")
    _fill(directory)
    unlink = os.unlink
    done: list[str] = []

    def killed_after_the_first(path: str, *, dir_fd: int | None = None) -> None:
        if done:
            raise KeyboardInterrupt  # as if killed here
        unlink(path, dir_fd=dir_fd)
        done.append(path)

    with monkeypatch.context() as patched:
        patched.setattr(os, "unlink", killed_after_the_first)
        with pytest.raises(KeyboardInterrupt):
            directory.remove()
    assert done == ["status.json"]
    assert "lock" in directory.listing()
    [info] = Domain.list(root.path)
    assert info.name == "half" and "cut short" in (info.error or "")
    searched: list[Path] = []

    def search(pidfile: Path) -> list[int]:
        searched.append(pidfile)
        return []

    monkeypatch.setattr(orphan, "_qemus_of", search)
    with pytest.raises(StateError, match="removal of its state"):
        await Domain.connect("half", state_root=root.path)
    assert searched == [directory.pid_file]
    assert not directory.path.exists()


def _written_before_the_first_rmdir(
    monkeypatch: pytest.MonkeyPatch, directory: DomainDir, names: list[str]
) -> list[str]:
    """Have another process write ``names`` into ``directory`` just before remove()'s
    first rmdir; the list of rmdir calls made, filled as they come."""
    rmdir = os.rmdir
    tries: list[str] = []

    def written_first(path: str, *, dir_fd: int | None = None) -> None:
        if not tries:
            for name in names:
                (directory.path / name).write_text("")
        tries.append(path)
        rmdir(path, dir_fd=dir_fd)

    monkeypatch.setattr(os, "rmdir", written_first)
    return tries


def test_a_removal_takes_a_request_to_abort_written_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = StateRoot(tmp_path / "state").domain("late")
    _fill(directory)
    tries = _written_before_the_first_rmdir(monkeypatch, directory, ["abort"])  # unlocked
    directory.remove()
    assert tries == ["late", "late"]
    assert not directory.path.exists()


def test_a_removal_leaves_a_directory_a_new_start_took(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = StateRoot(tmp_path / "state").domain("taken")
    _fill(directory)
    # a new start's lock, and a request to abort that is not the new start's to lose
    tries = _written_before_the_first_rmdir(monkeypatch, directory, ["lock", "abort"])
    directory.remove()
    assert tries == ["taken"]
    assert sorted(directory.listing()) == ["abort", "lock"]


def test_a_removal_leaves_what_qctl_did_not_put_there(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    directory = StateRoot(tmp_path / "state").domain("kept")
    _fill(directory)
    (directory.path / "notes.txt").write_text("someone else's")
    directory.remove()
    assert directory.listing() == ["notes.txt"]
    assert "it holds notes.txt" in caplog.text


async def test_a_start_makes_its_directory_again_when_removed_while_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Removed between ``make``'s mkdir and its open (by a command reaping it)."""
    directory = StateRoot(tmp_path / "state").domain("racing")
    real_open = os.open
    opened: list[str] = []

    def reaped_before_the_first_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if path == "racing":
            opened.append(path)
            if len(opened) == 1:
                os.rmdir(path, dir_fd=kwargs.get("dir_fd"))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", reaped_before_the_first_open)
    lock = await _made_and_locked(directory)
    monkeypatch.undo()
    lock.release()
    assert opened[:2] == ["racing", "racing"]
    assert directory.path.is_dir()


def test_a_removal_after_the_whole_root_went_is_done(tmp_path: Path) -> None:
    StateRoot(tmp_path / "state").domain("nothing").remove()  # (no root, no domains/)
    root = StateRoot(tmp_path / "state")
    root.ensure()
    root.domain("nothing").remove()


async def test_discarding_waits_for_no_one_and_is_refused_while_the_lock_is_held(
    tmp_path: Path,
) -> None:
    directory = StateRoot(tmp_path / "state").domain("damaged")
    directory.make()
    directory.status_file.write_bytes(b"{not json")
    lock = await directory.lock()  # a start, about to make the name anew
    try:
        with pytest.raises(StateError, match="another command is working"):
            directory.discard()
        assert directory.status_file.exists()
    finally:
        lock.release()
    directory.discard()
    assert not directory.path.exists()
