"""Jobs others can see and abort, QEMU's run state, and the event hub, on a fake QEMU.

The domain runs in this process against :class:`fakeqemu.FakeQEMU`; other processes are
real ``qctl`` commands, which reach the fake through the domain's monitor sockets and
status file exactly as they would reach QEMU.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fakeqemu import FakeLauncher, FakeQEMU
from support import open_fd_count, recorded_caps, unique, wait_until

from qctl import (
    DetachResult,
    DeviceAdded,
    DeviceRemoved,
    Domain,
    JobAbortedError,
    OtherEvent,
    RunState,
    StateError,
    abort_job,
    parse_domain,
)
from qctl.host import Netlink
from qctl.qemu import jobs, runtime
from qctl.qemu.jobs import read_job
from qctl.qemu.state import DomainDir
from qctl.qemu.status import StoredStatus, read_stored_status

CAPS = recorded_caps()
DOMAIN = """<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>64</memory>
  <os><type arch='x86_64' machine='q35'>hvm</type></os>
  <devices><controller type='pci' index='1' model='pcie-root-port'/></devices>
</domain>"""
NIC = (
    "<interface type='ethernet'><mac address='52:54:00:bb:00:01'/>"
    "<target dev='{tap}'/><model type='virtio'/></interface>"
)


@dataclass
class Rig:
    dom: Domain
    qemu: FakeQEMU
    state: Path


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    launcher = FakeLauncher()
    state = tmp_path / "state"
    defn = parse_domain(DOMAIN.format(name=unique("job")))
    dom = await Domain.start(defn, caps=CAPS, state_root=state, launcher=launcher)
    try:
        yield Rig(dom, launcher.qemu, state)
    finally:
        await dom.stop(force=True)


async def qctl(*args: str, state: Path) -> tuple[int, str, str, float]:
    """Run ``qctl ARGS`` in a child process without blocking this event loop (the fake QEMU
    it talks to lives here); returns (exit code, stdout, stderr, seconds)."""
    began = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "qctl.cli.main",
        *args,
        "--state-dir",
        str(state),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert b"Traceback" not in err, err.decode()
    return proc.returncode or 0, out.decode(), err.decode(), time.monotonic() - began


async def test_a_long_job_blocks_no_query_and_is_aborted_from_another_process(
    rig: Rig, tun: None, netlink: Netlink
) -> None:
    tap = unique("qjob")
    qemu, name = rig.qemu, rig.dom.name
    warm = await rig.dom.attach_device(NIC.format(tap=tap))  # opens netlink, once
    await rig.dom.detach_device(warm.alias or "")
    fds_before = open_fd_count()
    devices_before = set(qemu.peripherals)
    qemu.stall("device_add", effect=False)  # QEMU holds device_add: the job stays open
    attach = asyncio.create_task(rig.dom.attach_device(NIC.format(tap=tap)))
    async with asyncio.timeout(10):
        await qemu.stalled["device_add"].wait()
        await wait_until(lambda: read_job(rig.dom.directory) is not None)  # after a poll

    # Other processes query while the job runs; none waits for it (LOCK_TIMEOUT is 30 s).
    code, out, _, _ = await qctl("list", "--json", state=rig.state)
    assert code == 0, out
    [row] = json.loads(out)
    assert row["job"]["kind"] == "attach" and row["job"]["alias"] == "net0"
    assert row["state"] == "running"
    code, out, _, _ = await qctl("job", name, "--json", state=rig.state)
    assert code == 0 and json.loads(out)["job"]["kind"] == "attach"
    code, out, _, _ = await qctl("dumpxml", name, state=rig.state)
    assert code == 0 and f"<name>{name}</name>" in out
    code, out, err, _ = await qctl("events", name, "--timeout", "0.3", state=rig.state)
    assert code == 0 and "listening" in err
    assert not attach.done() and await netlink.get_link(tap) is not None

    code, out, err, _ = await qctl("job-abort", name, state=rig.state)
    assert code == 0, err
    assert "aborted attach of net0" in out
    with pytest.raises(JobAbortedError, match="aborted"):
        await attach
    # Rolled back as for a cancellation: nothing leaks.
    assert len(rig.dom.ledger) == 0 and rig.dom.job is None
    assert qemu.netdevs == set() and qemu.fds == set() and qemu.peripherals == devices_before
    assert await netlink.get_link(tap) is None
    assert open_fd_count() <= fds_before
    assert not rig.dom.directory.abort_file.exists()
    # The domain is usable again.
    qemu.stalled.clear()
    live = await rig.dom.attach_device(NIC.format(tap=tap))
    assert live.alias == "net0"


async def test_abort_in_the_same_process_and_with_no_job(rig: Rig) -> None:
    with pytest.raises(StateError, match="no job running"):
        await rig.dom.abort_job()
    rig.qemu.stall("netdev_add", effect=True)
    attach = asyncio.create_task(
        rig.dom.attach_device("<interface type='user'><model type='virtio'/></interface>")
    )
    async with asyncio.timeout(10):
        await rig.qemu.stalled["netdev_add"].wait()
    job = await abort_job(rig.dom.name, state_root=rig.state)
    assert job.kind == "attach"
    with pytest.raises(JobAbortedError):
        await attach
    assert rig.qemu.netdevs == set() and len(rig.dom.ledger) == 0


async def test_a_job_shorter_than_a_poll_writes_no_record(rig: Rig) -> None:
    live = await rig.dom.attach_device("<interface type='user'><model type='virtio'/></interface>")
    assert live.alias is not None
    journal = rig.dom.directory.journal_file
    before = journal.read_bytes() if journal.exists() else b""
    assert await rig.dom.detach_device(live.alias, wait=0) is DetachResult.PENDING
    lines = journal.read_bytes()[len(before) :].splitlines()
    # the intent alone: no record to show, so none to take back at the job's end
    assert len(lines) == 1 and b'"detaching"' in lines[0] and b'"job"' not in lines[0]
    assert read_job(rig.dom.directory) is None


async def test_a_job_that_changes_nothing_renders_nothing_at_its_end(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    rt = rig.dom.runtime
    async with rt.job("probe"):
        rt.set_state(RunState.PAUSED)  # written at the job's end
    rendered: list[int] = []
    real = rt._render

    def counted() -> object:
        rendered.append(1)
        return real()

    monkeypatch.setattr(rt._writer, "_render", counted)
    async with rt.job("probe"):
        pass
    assert rendered == []  # nothing to show: no render, no write
    assert read_stored_status(rig.dom.directory).state is RunState.PAUSED


async def test_a_run_state_set_in_a_job_is_written_at_its_end(rig: Rig) -> None:
    rt = rig.dom.runtime
    async with rt.job("probe"):
        await asyncio.sleep(0)  # any write of the job's start is over
        rt.set_state(RunState.PAUSED)  # no save of its own
    assert read_stored_status(rig.dom.directory).state is RunState.PAUSED


async def test_a_shown_job_that_changed_nothing_is_taken_off_the_books(rig: Rig) -> None:
    rt = rig.dom.runtime
    async with rt.job("probe"), asyncio.timeout(5):
        await wait_until(lambda: read_job(rig.dom.directory) is not None)
    assert read_job(rig.dom.directory) is None


async def test_an_abort_finds_a_job_not_shown_yet(rig: Rig) -> None:
    rig.qemu.stall("netdev_add", effect=True)
    attach = asyncio.create_task(
        rig.dom.attach_device("<interface type='user'><model type='virtio'/></interface>")
    )
    async with asyncio.timeout(10):
        await rig.qemu.stalled["netdev_add"].wait()
    assert read_job(rig.dom.directory) is None  # younger than a poll: not in the books yet…
    assert rig.dom.directory.job_running()  # …but it holds the lock
    job = await abort_job(rig.dom.name, state_root=rig.state)  # waits for its record
    assert job.kind == "attach"
    with pytest.raises(JobAbortedError):
        await attach
    assert not rig.dom.directory.job_running()


async def test_a_job_whose_owner_died_is_shown_and_recovered_on_connect(rig: Rig) -> None:
    # A job record left by a process that died (its flock went with it).
    status = rig.dom.directory.read_status()
    del status["journal"]  # a whole file of another generation: the journal no longer counts
    status["job"] = {
        "id": "1.1.1",
        "kind": "attach",
        "alias": "net7",
        "pid": 999999,
        "pid_start_time": 1,
        "started": time.time(),
        "progress": None,
    }
    rig.dom.directory.status_file.write_text(json.dumps(status))
    [info] = Domain.list(rig.state)
    assert info.job is not None and not info.job.owner_alive
    assert "owner died" in info.job.describe()
    with pytest.raises(StateError, match="cut short"):
        await abort_job(rig.dom.name, state_root=rig.state)
    async with Domain.connect(rig.dom.name, state_root=rig.state):
        pass
    [info] = Domain.list(rig.state)
    assert info.job is None


async def test_run_state_follows_qemu(rig: Rig) -> None:
    assert rig.dom.state is RunState.RUNNING
    await rig.dom.suspend()
    assert rig.dom.state is RunState.PAUSED
    [info] = Domain.list(rig.state)
    assert info.state is RunState.PAUSED
    resumed = asyncio.create_task(rig.dom.wait_event("RESUME", timeout=5))
    async with Domain.connect(rig.dom.name, state_root=rig.state) as other:
        assert other.state is RunState.PAUSED  # query-status at connect
        await other.resume()
    await resumed
    assert rig.dom.state is RunState.RUNNING
    panicked = asyncio.create_task(rig.dom.wait_event("GUEST_PANICKED", timeout=5))
    await asyncio.sleep(0.01)
    await rig.qemu.emit("GUEST_PANICKED", {"action": "pause"})
    await panicked
    assert rig.dom.state is RunState.CRASHED


async def test_stop_of_a_paused_domain_quits_at_once(rig: Rig) -> None:
    await rig.dom.suspend()
    said: list[str] = []
    began = time.monotonic()
    await rig.dom.stop(grace=30, say=said.append)
    assert time.monotonic() - began < 10  # not the 30 s grace
    assert said == ["the domain is paused: quitting at once"]
    commands = [command for command, _ in rig.qemu.log]
    assert "system_powerdown" not in commands and "quit" in commands
    assert Domain.list(rig.state) == []


async def test_stop_asks_a_running_guest_first(rig: Rig) -> None:
    said: list[str] = []
    await rig.dom.stop(grace=5, say=said.append)
    assert said == ["asking the guest to power down (5 s)…"]
    assert "system_powerdown" in [command for command, _ in rig.qemu.log]


async def test_stop_says_when_the_guest_does_not_answer(rig: Rig) -> None:
    rig.qemu.guest_answers_acpi = False
    said: list[str] = []
    await rig.dom.stop(grace=0.2, say=said.append)
    assert said == ["asking the guest to power down (0.2 s)…", "the guest did not answer; quitting"]


async def test_wait_event_is_scoped_and_typed(rig: Rig) -> None:
    waiter = asyncio.create_task(
        rig.dom.wait_event(DeviceRemoved, match=lambda e: getattr(e, "alias", "") == "b", timeout=5)
    )
    await asyncio.sleep(0.05)
    await rig.qemu.emit("DEVICE_DELETED", {"device": "a"})
    await rig.qemu.emit("DEVICE_DELETED", {"device": "b"})
    event = await waiter
    assert isinstance(event, DeviceRemoved) and event.alias == "b"
    with pytest.raises(TimeoutError):
        await rig.dom.wait_event("NEVER_SENT", timeout=0.1)
    other = asyncio.create_task(rig.dom.wait_event("SOMETHING", timeout=5))
    await asyncio.sleep(0.05)
    await rig.qemu.emit("SOMETHING", {"x": 1})
    got = await other
    assert isinstance(got, OtherEvent) and got.data == {"x": 1}


async def test_events_show_attaches_made_by_other_processes(rig: Rig) -> None:
    with rig.dom.events() as stream:
        async with Domain.connect(rig.dom.name, state_root=rig.state) as other:
            live = await other.attach_device(
                "<interface type='user'><model type='virtio'/></interface>"
            )
        async with asyncio.timeout(5):
            async for event in stream:
                if isinstance(event, DeviceAdded):
                    break
    assert event.alias == live.alias


async def test_an_attach_by_another_process_is_shown_after_the_listeners_own_job(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The listener's own job takes the other process's write up (refresh) and writes over it
    # before the watch looks: the version the watch then sees is the listener's own.
    monkeypatch.setattr(runtime, "BOOKS_POLL", 1.0)  # both writes land before it looks
    with rig.dom.events() as stream:
        async with Domain.connect(rig.dom.name, state_root=rig.state) as other:
            theirs = await other.attach_device(
                "<interface type='user'><model type='virtio'/></interface>"
            )
        await rig.dom.suspend()  # a job of the listener's: it refreshes, then writes
        async with asyncio.timeout(5):
            async for event in stream:
                if isinstance(event, DeviceAdded):
                    break
    assert isinstance(event, DeviceAdded) and event.alias == theirs.alias


async def test_the_books_watch_skips_this_handles_own_writes(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Reading the status file again for a write the handle made itself would cost a listener
    # a file read at every hot-plug step (and once cost a parse of both definitions).
    reads: list[Path] = []
    real = read_stored_status

    def counted(directory: DomainDir) -> StoredStatus:
        reads.append(directory.path)
        return real(directory)

    monkeypatch.setattr(runtime, "read_stored_status", counted)
    with rig.dom.events():
        await rig.dom.attach_device("<interface type='user'><model type='virtio'/></interface>")
        await asyncio.sleep(3 * runtime.BOOKS_POLL)
    assert reads == []


async def test_an_undo_that_fails_leaves_the_device_uncertain_with_what_it_holds(
    rig: Rig,
) -> None:
    # device_add's reply is lost (QEMU has the device), then the rollback cannot even list
    # QEMU's devices: nothing may be forgotten or deleted after that.
    release = rig.qemu.stall("device_add", effect=True)
    attach = asyncio.create_task(
        rig.dom.attach_device("<interface type='user'><model type='virtio'/></interface>")
    )
    async with asyncio.timeout(10):
        await rig.qemu.stalled["device_add"].wait()
    rig.qemu.fail("qom-list", "fake failure of qom-list")
    attach.cancel()
    await asyncio.sleep(0)
    attach.cancel()  # a second Ctrl-C while the rollback runs: held until it is done
    with pytest.raises(asyncio.CancelledError):
        await attach
    release.set()
    [entry] = rig.dom.ledger
    assert entry.state == "uncertain" and entry.netdev_id == "hostnet0"
    assert "hostnet0" in rig.qemu.netdevs and "net0" in rig.qemu.peripherals
    # The next connect settles it: QEMU has the device, so it is adopted.
    async with Domain.connect(rig.dom.name, state_root=rig.state) as other:
        assert other.ledger.get("net0").state == "attached"  # type: ignore[union-attr]


async def test_a_detach_cut_short_before_qemu_had_it_is_asked_again_on_connect(
    rig: Rig,
) -> None:
    live = await rig.dom.attach_device(
        "<interface type='user'><model type='virtio'/></interface>"
    )
    rig.qemu.stall("device_del", effect=False)  # the request never reaches QEMU
    detach = asyncio.create_task(rig.dom.detach_device(live.alias or "", wait=1))
    async with asyncio.timeout(10):
        await rig.qemu.stalled["device_del"].wait()
    detach.cancel()
    with pytest.raises(asyncio.CancelledError):
        await detach
    assert rig.dom.ledger.get("net0").state == "detaching"  # type: ignore[union-attr]
    # A connect asks QEMU again: this time the guest lets go, and the books follow.
    async with Domain.connect(rig.dom.name, state_root=rig.state) as other:
        async with asyncio.timeout(10):
            await wait_until(lambda: other.ledger.get("net0") is None)
    assert "net0" not in rig.qemu.peripherals and "hostnet0" not in rig.qemu.netdevs


async def test_an_abort_racing_the_removal_of_the_domain_returns_its_job(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The request cannot be written (its temporary file swept, or the directory gone): the
    job ended with its domain when its books are gone, else the caller is told to retry."""
    rig.qemu.stall("netdev_add", effect=True)
    attach = asyncio.create_task(
        rig.dom.attach_device("<interface type='user'><model type='virtio'/></interface>")
    )
    async with asyncio.timeout(10):
        await rig.qemu.stalled["netdev_add"].wait()
    status = rig.dom.directory.status_file
    kept = status.read_bytes()
    books_go = False

    def swept(path: Path, data: bytes) -> None:
        if books_go:
            status.unlink()  # the removal goes on
        raise FileNotFoundError(2, "No such file or directory", str(path))

    monkeypatch.setattr(jobs, "atomic_write", swept)
    try:
        with pytest.raises(StateError, match="could not ask the attach job"):
            await abort_job(rig.dom.name, state_root=rig.state)  # (its books are there)
        books_go = True
        job = await abort_job(rig.dom.name, state_root=rig.state)
        assert job.kind == "attach"
    finally:
        monkeypatch.undo()
        if not status.exists():
            status.write_bytes(kept)
        await abort_job(rig.dom.name, state_root=rig.state)
    with pytest.raises(JobAbortedError):
        await attach
