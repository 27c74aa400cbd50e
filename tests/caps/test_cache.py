"""The capabilities cache: hits, invalidation by every part of the fingerprint, one shared
caps object per binary in a process, one shared probe for concurrent lookups, parallel probes
of several binaries, atomic writes."""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.metadata
import json
import logging
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from fakeqmp import RECORDING_7_2, read_log, write_fake_binary

import qctl
from caps.support import FakeQEMU, Leftovers, start_log, wait_until
from qctl.caps import (
    CapsCache,
    Fingerprint,
    QEMUCaps,
    default_cache_dir,
    probe_many,
)
from qctl.caps import cache as cache_module
from qctl.errors import ProcessError


@pytest.fixture
def kvm(tmp_path: Path) -> Path:
    """A stand-in for /dev/kvm, present until a test removes it."""
    node = tmp_path / "kvm"
    node.write_text("")
    return node


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def make_cache(
    directory: Path,
    kvm: Path,
    *,
    qctl_version: str = "1.0",
    kernel: str = "6.1.0-test #1",
    tun_path: str = "/nonexistent",
) -> CapsCache:
    """A cache with the fingerprint's and the host facts' inputs injected."""
    return CapsCache(
        directory,
        qctl_version=qctl_version,
        kernel=kernel,
        kvm_path=str(kvm),
        tun_path=tun_path,
    )


def spawns(binary: Path) -> int:
    return len(read_log(start_log(binary)))


async def test_a_second_lookup_reads_the_cache(
    fake_qemu: FakeQEMU, cache_dir: Path, kvm: Path
) -> None:
    binary = fake_qemu()
    first = await make_cache(cache_dir, kvm).get(binary)
    second = await make_cache(cache_dir, kvm).get(binary)
    assert second == first and spawns(binary) == 1
    entry = make_cache(cache_dir, kvm).entry_path(binary)
    assert stat.S_IMODE(os.stat(entry).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(cache_dir).st_mode) & 0o077 == 0
    assert os.listdir(cache_dir) == [entry.name]


async def test_refresh_probes_again(fake_qemu: FakeQEMU, cache_dir: Path, kvm: Path) -> None:
    binary = fake_qemu()
    await make_cache(cache_dir, kvm).get(binary)
    await make_cache(cache_dir, kvm).get(binary, refresh=True)
    assert spawns(binary) == 2


FIELDS = [field.name for field in dataclasses.fields(Fingerprint)]


@pytest.mark.parametrize("field", FIELDS)
async def test_an_entry_whose_fingerprint_differs_in_any_part_is_not_used(
    fake_qemu: FakeQEMU, cache_dir: Path, kvm: Path, field: str
) -> None:
    binary = fake_qemu()
    cache = make_cache(cache_dir, kvm)
    await cache.get(binary)
    entry_file = cache.entry_path(binary)
    entry = json.loads(entry_file.read_text())
    value = entry["fingerprint"][field]
    entry["fingerprint"][field] = (
        not value if isinstance(value, bool) else value + 1 if isinstance(value, int) else "x"
    )
    entry_file.write_text(json.dumps(entry))
    await cache.get(binary)
    assert spawns(binary) == 2


def test_the_fingerprint_reads_the_binary_and_the_host(
    fake_qemu: FakeQEMU, cache_dir: Path, kvm: Path
) -> None:
    binary = fake_qemu()
    os.utime(binary, ns=(1_000_000_000, 2_000_000_000))
    cache = make_cache(cache_dir, kvm, qctl_version="9.9", kernel="6.99 #7")
    fingerprint = cache.fingerprint(binary)
    assert fingerprint == Fingerprint(
        binary=str(binary.resolve()),
        device=binary.stat().st_dev,
        inode=binary.stat().st_ino,
        mtime_ns=2_000_000_000,
        ctime_ns=binary.stat().st_ctime_ns,
        size=binary.stat().st_size,
        qctl_version="9.9",
        kernel="6.99 #7",
        kvm=True,
    )
    kvm.unlink()
    assert not cache.fingerprint(binary).kvm


async def test_every_lookup_in_a_process_shares_one_caps_object(
    fake_qemu: FakeQEMU, cache_dir: Path, kvm: Path
) -> None:
    binary = fake_qemu()
    probed = await make_cache(cache_dir, kvm).get(binary)
    again = await make_cache(cache_dir, kvm).get(binary)
    assert again is probed
    cache_module._MEMO.clear()  # as a new process: the entry is read from the file
    read = await make_cache(cache_dir, kvm).get(binary)
    assert read == probed and read is not probed
    assert await make_cache(cache_dir, kvm).get(binary) is read
    assert spawns(binary) == 1


async def test_touching_the_binary_means_a_new_probe_and_a_new_object(
    fake_qemu: FakeQEMU, cache_dir: Path, kvm: Path
) -> None:
    binary = fake_qemu()
    first = await make_cache(cache_dir, kvm).get(binary)
    mtime = binary.stat().st_mtime_ns
    os.utime(binary, ns=(mtime + 1_000_000_000, mtime + 1_000_000_000))
    second = await make_cache(cache_dir, kvm).get(binary)
    assert second is not first and spawns(binary) == 2
    assert await make_cache(cache_dir, kvm).get(binary) is second


async def test_an_entry_another_process_rewrote_is_read_again(
    fake_qemu: FakeQEMU, cache_dir: Path, kvm: Path
) -> None:
    binary = fake_qemu()
    cache = make_cache(cache_dir, kvm)
    await cache.get(binary)
    entry_file = cache.entry_path(binary)
    entry = json.loads(entry_file.read_text())
    entry["caps"]["package"] = "rebuilt"
    entry_file.write_text(json.dumps(entry))
    assert (await cache.get(binary)).package == "rebuilt"
    assert spawns(binary) == 1


async def test_lookups_read_no_package_metadata(
    fake_qemu: FakeQEMU, cache_dir: Path, kvm: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """qctl's version comes from :mod:`qctl.version`: a lookup never asks importlib.metadata
    (importing it costs a CLI command about 30 ms)."""
    calls: list[str] = []

    def counting(name: str) -> str:
        calls.append(name)
        return "0"

    monkeypatch.setattr(importlib.metadata, "version", counting)
    binary = fake_qemu()
    for _ in range(5):
        cache = CapsCache(cache_dir, kernel="k", kvm_path=str(kvm))
        await cache.get(binary)
    assert calls == []
    assert cache.fingerprint(binary).qctl_version == qctl.__version__  # what entries key on
    assert spawns(binary) == 1


async def test_a_changed_binary_is_probed_again(
    fake_qemu: FakeQEMU, cache_dir: Path, kvm: Path
) -> None:
    binary = fake_qemu()
    await make_cache(cache_dir, kvm).get(binary)
    with binary.open("a") as script:
        script.write("# upgraded\n")
    await make_cache(cache_dir, kvm).get(binary)
    assert spawns(binary) == 2


@pytest.mark.parametrize("change", ["qctl_version", "kernel", "kvm"])
async def test_a_new_qctl_kernel_or_kvm_state_means_a_new_probe(
    fake_qemu: FakeQEMU, cache_dir: Path, kvm: Path, change: str
) -> None:
    binary = fake_qemu()
    await make_cache(cache_dir, kvm).get(binary)
    if change == "kvm":
        os.unlink(kvm)
        await make_cache(cache_dir, kvm).get(binary)
    else:
        await make_cache(cache_dir, kvm, **{change: "changed"}).get(binary)
    assert spawns(binary) == 2


async def test_host_facts_are_fresh_on_every_lookup(
    fake_qemu: FakeQEMU, cache_dir: Path, kvm: Path, tmp_path: Path
) -> None:
    tun = tmp_path / "tun"
    tun.write_text("")
    binary = fake_qemu()
    assert (await make_cache(cache_dir, kvm, tun_path=str(tun)).get(binary)).host.tun
    tun.unlink()
    assert not (await make_cache(cache_dir, kvm, tun_path=str(tun)).get(binary)).host.tun
    assert spawns(binary) == 1


async def test_concurrent_lookups_share_one_probe(
    fake_qemu: FakeQEMU, cache_dir: Path, kvm: Path, tmp_path: Path
) -> None:
    binary = fake_qemu()
    cache = make_cache(cache_dir, kvm)
    tun = tmp_path / "tun"
    tun.write_text("")
    other_object = make_cache(cache_dir, kvm, tun_path=str(tun))
    results = await asyncio.gather(*(cache.get(binary) for _ in range(4)), other_object.get(binary))
    assert spawns(binary) == 1
    assert all(caps == results[0] for caps in results[:4])
    # each lookup has its own cache object's host facts
    assert [caps.host.tun for caps in results] == [False] * 4 + [True]


def release(binary: Path) -> None:
    """Let a fake binary started with ``barrier=2`` go on."""
    with start_log(binary).open("a") as log:
        log.write(json.dumps({"released": True}) + "\n")


async def test_a_cancelled_lookup_leaves_the_shared_probe_to_the_others(
    fake_qemu: FakeQEMU, cache_dir: Path, kvm: Path
) -> None:
    binary = fake_qemu(barrier=2)  # waits for release()
    cache = make_cache(cache_dir, kvm)
    quitter = asyncio.create_task(cache.get(binary))
    stayer = asyncio.create_task(cache.get(binary))
    await wait_until(lambda: spawns(binary) == 1)
    quitter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await quitter
    release(binary)
    caps = await stayer
    assert caps.version[:2] == (7, 2)
    assert len([r for r in read_log(start_log(binary)) if "pid" in r]) == 1


async def test_cancelling_the_only_lookup_stops_the_probe(
    fake_qemu: FakeQEMU, cache_dir: Path, kvm: Path, leftovers: Leftovers
) -> None:
    binary = fake_qemu(barrier=2)  # never released
    lookup = asyncio.create_task(make_cache(cache_dir, kvm).get(binary))
    await wait_until(lambda: spawns(binary) == 1)
    lookup.cancel()
    with pytest.raises(asyncio.CancelledError):
        await lookup
    leftovers.check()


async def test_several_binaries_are_probed_in_parallel(
    tmp_path: Path, cache_dir: Path, kvm: Path
) -> None:
    """Each fake waits until both have started: probed one after the other, the first
    would give up at its barrier (exit 3) and the probe would fail."""
    log = tmp_path / "both.log"
    first, second = (
        write_fake_binary(tmp_path, RECORDING_7_2, log=log, barrier=2, name=name)
        for name in ("qemu-a", "qemu-b")
    )
    results = await probe_many([first, second], cache=make_cache(cache_dir, kvm))
    assert list(results) == [str(first), str(second)]
    assert all(isinstance(caps, QEMUCaps) for caps in results.values())
    assert len(read_log(log)) == 2


async def test_probe_many_reports_each_failure_on_its_own(
    fake_qemu: FakeQEMU, tmp_path: Path
) -> None:
    binary = fake_qemu()
    results = await probe_many([binary, "/bin/true", tmp_path / "absent"])
    assert isinstance(results[str(binary)], QEMUCaps)
    assert isinstance(results["/bin/true"], ProcessError)
    assert isinstance(results[str(tmp_path / "absent")], ProcessError)


async def test_a_damaged_entry_is_probed_again_and_replaced(
    fake_qemu: FakeQEMU, cache_dir: Path, kvm: Path
) -> None:
    binary = fake_qemu()
    cache = make_cache(cache_dir, kvm)
    caps = await cache.get(binary)
    cache.entry_path(binary).write_text('{"format": 1, "fingerprint"')
    assert await cache.get(binary) == caps
    assert spawns(binary) == 2
    assert await make_cache(cache_dir, kvm).get(binary) == caps
    assert spawns(binary) == 2


async def test_a_failed_write_keeps_the_old_entry_and_no_temporary_file(
    fake_qemu: FakeQEMU,
    cache_dir: Path,
    kvm: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    binary = fake_qemu()
    cache = make_cache(cache_dir, kvm)
    await cache.get(binary)
    before = cache.entry_path(binary).read_bytes()

    def disk_full(source: str, target: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", disk_full)
    caps = await cache.get(binary, refresh=True)
    assert caps.version[:2] == (7, 2)
    assert cache.entry_path(binary).read_bytes() == before
    assert os.listdir(cache_dir) == [cache.entry_path(binary).name]
    assert "No space left on device" in caplog.text


async def test_an_unusable_cache_directory_still_answers(
    fake_qemu: FakeQEMU, tmp_path: Path, kvm: Path, caplog: pytest.LogCaptureFixture
) -> None:
    not_a_directory = tmp_path / "file"
    not_a_directory.write_text("")
    caps = await make_cache(not_a_directory, kvm).get(fake_qemu())
    assert caps.version[:2] == (7, 2)
    assert any(r.levelno == logging.WARNING for r in caplog.records)


WRITER = """
import sys
from pathlib import Path
from qctl.caps import CapsCache, Fingerprint, QEMUCaps
caps = QEMUCaps.from_json(Path(sys.argv[2]).read_text())
cache = CapsCache(sys.argv[1], qctl_version="1.0", kernel="k")
fingerprint = Fingerprint("/usr/bin/qemu", 1, 1, 1, 1, 1, "1.0", "k", True)
for _ in range(150):
    cache._store(fingerprint, caps)
"""


def test_writers_in_other_processes_never_expose_half_an_entry(
    tmp_path: Path, cache_dir: Path
) -> None:
    caps_file = tmp_path / "caps.json"
    caps = QEMUCaps(qom_types=frozenset(f"type-{n}" for n in range(3000)))
    caps_file.write_text(caps.to_json())
    entry = CapsCache(cache_dir)._entry_file("/usr/bin/qemu")
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(cache_dir), str(caps_file)])
        for _ in range(2)
    ]
    reads = 0
    while any(writer.poll() is None for writer in writers):
        try:
            data = json.loads(entry.read_bytes())
        except FileNotFoundError:
            continue
        assert len(data["caps"]["qom_types"]) == 3000
        reads += 1
    assert [writer.returncode for writer in writers] == [0, 0]
    assert reads > 0
    assert os.listdir(cache_dir) == [entry.name]


def test_the_default_directory_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / "qctl" / "caps"
    assert CapsCache().directory == tmp_path / "qctl" / "caps"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/dir")  # ignored, as the spec says
    assert default_cache_dir() == Path.home() / ".cache" / "qctl" / "caps"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_dir() == Path.home() / ".cache" / "qctl" / "caps"


async def test_a_missing_binary_is_a_process_error(cache_dir: Path, kvm: Path) -> None:
    with pytest.raises(ProcessError, match="no such QEMU binary"):
        await make_cache(cache_dir, kvm).get("/nonexistent/qemu")
