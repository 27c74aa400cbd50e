"""The status file's journal: a hot-plug step appends what changed, readers apply the lines
of their status file's generation only, and a torn or stale line is never applied."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from support import FAKE_DOMAIN, USER_NIC, start_fake

from qctl import StateError
from qctl.conf import format_xml, parse_domain
from qctl.qemu.journal import MAX_LINES, line, merge
from qctl.qemu.ledger import DeviceKind, EntryState, Ledger, LedgerEntry
from qctl.qemu.process import ProcessIdentity
from qctl.qemu.runstate import RunState
from qctl.qemu.state import StateRoot, append_to, atomic_write, open_append
from qctl.qemu.status import Status, StatusRenderer, read_stored_status


def append(path: Path, data: bytes) -> None:
    fd, _ = open_append(path)
    try:
        append_to(fd, data)
    finally:
        os.close(fd)


def entry(alias: str, state: EntryState = EntryState.ATTACHED) -> LedgerEntry:
    return LedgerEntry(alias=alias, kind=DeviceKind.INTERFACE, state=state)


def status_of(ledger: Ledger) -> Status:
    domain = parse_domain(FAKE_DOMAIN.format(name="vm"))
    return Status(ProcessIdentity(1, 1), "qemu", domain, domain, ledger)


def read_back(tmp_path: Path, renderer: StatusRenderer, status: Status) -> Ledger:
    """Write ``status`` as the renderer says (whole, or a line) and read it back."""
    directory = StateRoot(tmp_path).domain("vm")
    directory.make()
    update = renderer.update(status, live_xml=live_xml(status))
    if update.append:
        append(directory.journal_file, update.data)
    else:
        atomic_write(directory.status_file, update.data)
        directory.journal_file.unlink(missing_ok=True)
    return read_stored_status(directory).ledger


_LIVE: dict[int, str] = {}


def live_xml(status: Status) -> str:
    """The live snapshot, the same string object for the same definition (as the runtime
    keeps it)."""
    return _LIVE.setdefault(id(status.live), format_xml(status.live))


def test_steps_are_lines_and_read_back_as_the_books(tmp_path: Path) -> None:
    renderer = StatusRenderer()
    ledger = Ledger()
    status = status_of(ledger)
    steps: list[Callable[[], None]] = [
        lambda: ledger.put(entry("net0", EntryState.ATTACHING)),
        lambda: ledger.put(entry("net0")),
        lambda: ledger.put(entry("net1", EntryState.ATTACHING)),
        lambda: ledger.put(entry("net2")),
        lambda: ledger.remove("net1"),
        lambda: ledger.put(entry("net0", EntryState.DETACHING)),
    ]
    read_back(tmp_path, renderer, status)  # the first write is whole
    journal = StateRoot(tmp_path).domain("vm").journal_file
    assert not journal.exists()
    for step in steps:
        step()
        assert list(read_back(tmp_path, renderer, status)) == list(ledger)
    assert journal.read_bytes().count(b"\n") == len(steps)


def test_nothing_changed_is_an_empty_line_and_the_job_and_state_travel(tmp_path: Path) -> None:
    renderer = StatusRenderer()
    status = status_of(Ledger())
    read_back(tmp_path, renderer, status)
    assert renderer.update(status, live_xml=live_xml(status)).data == b""
    status.state = RunState.PAUSED
    read_back(tmp_path, renderer, status)
    assert StateRoot(tmp_path).domain("vm").read_status()["state"] == "paused"


@pytest.mark.parametrize("change", ["snapshot", "moved", "long"])
def test_what_a_line_cannot_say_is_written_whole(change: str) -> None:
    renderer = StatusRenderer()
    ledger = Ledger({"a": entry("a"), "b": entry("b")})
    status = status_of(ledger)
    renderer.update(status, live_xml=live_xml(status))
    if change == "snapshot":  # the live XML was rendered again
        status.live = parse_domain(FAKE_DOMAIN.format(name="vm"))
    elif change == "moved":  # dropped and put again: now last, which a line cannot say
        ledger.remove("a")
        ledger.put(entry("a"))
    else:
        for n in range(MAX_LINES):
            ledger.put(entry(f"n{n}"))
            assert renderer.update(status, live_xml=live_xml(status)).append
        ledger.put(entry("last"))
    assert not renderer.update(status, live_xml=live_xml(status)).append


def test_after_a_reset_the_next_write_is_whole() -> None:
    renderer = StatusRenderer()
    status = status_of(Ledger())
    renderer.update(status, live_xml=live_xml(status))
    renderer.reset()  # a failed write, or another process wrote the file
    assert not renderer.update(status, live_xml=live_xml(status)).append


def test_lines_of_another_generation_and_a_torn_last_line_are_not_applied() -> None:
    data = {"journal": "g2", "ledger": [{"alias": "a"}], "job": None, "state": "running"}
    journal = b"".join(
        [
            line("g1", ['{"alias":"stale"}'], ["a"]),  # left by a crash before a rewrite
            line("g2", ['{"alias":"b"}'], [], state="paused"),
            line("g2", [], ["a"], job='{"id":"1"}'),
            line("g2", ['{"alias":"torn"}'], [])[:-1],  # its write was cut short
        ]
    )
    merge(data, journal)
    assert data == {"journal": "g2", "ledger": [{"alias": "b"}], "job": {"id": "1"},
                    "state": "paused"}  # fmt: skip


def test_a_garbled_line_ends_what_is_applied_and_a_line_of_the_wrong_shape_is_damage(
    tmp_path: Path,
) -> None:
    data: dict[str, Any] = {"journal": "g", "ledger": [], "job": None, "state": "running"}
    journal = b"".join(
        [
            b"\0\0garbage of an older generation\n",  # skipped unread
            line("g", ['{"alias":"a"}'], []),
            b'{"gen":"g","put":[{"ali\0\0\0\n',  # a crash garbled the unsynced tail…
            line("g", ['{"alias":"b"}'], []),  # …and what follows it was never synced
        ]
    )
    merge(data, journal)
    assert data["ledger"] == [{"alias": "a"}]
    directory = StateRoot(tmp_path).domain("vm")
    directory.make()
    directory.write_status({"journal": "g", "ledger": []})
    append(directory.journal_file, b'{"gen":"g","put":[1]}\n')
    with pytest.raises(StateError, match=r"journal .* is damaged"):
        directory.read_status()


def test_a_journal_that_is_a_symlink_is_refused(tmp_path: Path) -> None:
    directory = StateRoot(tmp_path).domain("vm")
    directory.make()
    directory.write_status({"journal": "g", "ledger": []})
    decoy = tmp_path / "decoy"
    decoy.write_bytes(b"")
    directory.journal_file.symlink_to(decoy)
    with pytest.raises(StateError, match="symlink"):
        directory.read_status()
    with pytest.raises(StateError, match="symlink"):
        open_append(directory.journal_file)
    assert decoy.read_bytes() == b""


async def test_a_running_domain_s_books_are_its_status_file_and_journal(tmp_path: Path) -> None:
    dom = await start_fake(tmp_path, "journal")
    try:
        live = await dom.attach_device(USER_NIC)
        assert live.alias is not None
        directory = dom.directory
        whole = json.loads(directory.status_file.read_bytes())
        lines = directory.journal_file.read_bytes().splitlines()
        assert lines and all(json.loads(raw)["gen"] == whole["journal"] for raw in lines)
        assert [e.to_json() for e in dom.ledger] == directory.read_status()["ledger"]
        await dom.detach_device(live.alias)  # a removal renews the snapshot: whole again
        assert directory.read_status()["journal"] != whole["journal"]
        assert directory.read_status()["ledger"] == []
    finally:
        await dom.stop(force=True)


def test_changes_made_between_two_writes_go_in_one_line_in_the_ledger_s_order(
    tmp_path: Path,
) -> None:
    renderer = StatusRenderer()
    ledger = Ledger({"net0": entry("net0"), "net1": entry("net1")})
    status = status_of(ledger)
    read_back(tmp_path, renderer, status)
    ledger.put(entry("net2", EntryState.ATTACHING))
    ledger.put(entry("net3", EntryState.ATTACHING))
    ledger.remove("net1")
    ledger.put(entry("net0", EntryState.DETACHING))
    ledger.put(entry("net3"))  # changed last of the two, but it stays after net2
    assert list(read_back(tmp_path, renderer, status)) == list(ledger)
    assert [e.alias for e in ledger] == ["net0", "net2", "net3"]
    ledger.remove("net0")
    ledger.put(entry("net1"))  # gone before the last write: it comes back last
    assert list(read_back(tmp_path, renderer, status)) == list(ledger)
    journal = StateRoot(tmp_path).domain("vm").journal_file
    assert journal.read_bytes().count(b"\n") == 2


def test_a_line_costs_what_changed_not_the_whole_ledger(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    renderer = StatusRenderer()
    ledger = Ledger({f"net{n}": entry(f"net{n}") for n in range(50)})
    status = status_of(ledger)
    read_back(tmp_path, renderer, status)

    def no_walk(self: Ledger) -> Any:
        raise AssertionError("the whole ledger was walked for a line")

    monkeypatch.setattr(Ledger, "__iter__", no_walk)
    ledger.put(entry("net7", EntryState.DETACHING))
    update = renderer.update(status, live_xml=live_xml(status))
    assert update.append
    assert json.loads(update.data)["put"] == [entry("net7", EntryState.DETACHING).to_json()]


@pytest.mark.parametrize("alias", ["net0", 'x","state":"attached', "state"])
def test_a_change_of_state_alone_gives_the_json_a_fresh_dump_would(alias: str) -> None:
    renderer = StatusRenderer()
    before = LedgerEntry(alias=alias, kind=DeviceKind.INTERFACE, state=EntryState.ATTACHED,
                         netdev_id="hostnet0", device_xml='<interface type="user"/>')  # fmt: skip
    ledger = Ledger({alias: before})
    status = status_of(ledger)
    renderer.update(status, live_xml=live_xml(status))
    for state in (EntryState.DETACHING, EntryState.UNCERTAIN, EntryState.ATTACHED):
        after = ledger.get(alias)
        assert after is not None
        ledger.put(after.evolve(state=state))
        update = renderer.update(status, live_xml=live_xml(status))
        [put] = json.loads(update.data)["put"]
        assert put == ledger.get(alias).to_json()  # type: ignore[union-attr]
    ledger.put(before.evolve(tap="vnet0"))  # another field: dumped anew
    [put] = json.loads(renderer.update(status, live_xml=live_xml(status)).data)["put"]
    assert put["tap"] == "vnet0" and put["state"] == "attached"


def test_another_ledger_is_written_whole() -> None:
    renderer = StatusRenderer()
    status = status_of(Ledger({"net0": entry("net0")}))
    renderer.update(status, live_xml=live_xml(status))
    status.ledger = Ledger({"net0": entry("net0")})  # read anew (another process wrote)
    assert not renderer.update(status, live_xml=live_xml(status)).append
