"""The console reader/writer against a log file, and a pty qctl plays QEMU for.

A ``sleep`` process stands in for QEMU where its exit matters; the bundled guest's console
is tested in tests/qemu/test_console_guest.py.
"""

from __future__ import annotations

import asyncio
import os
import re
import tty
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from qctl.caps import QEMUCaps
from qctl.conf import parse_domain
from qctl.errors import ConsoleError, StateError
from qctl.qemu.command import Features, build_command
from qctl.qemu.console import RECENT_LINES, Console, console_log_option
from qctl.qemu.plan import plan
from qctl.qemu.process import QEMUProcess
from qctl.qemu.state import DomainDir

CAPS_FILE = Path(__file__).parent / "data" / "argv" / "qemu-7.2.caps.json"


def _append(path: Path, data: bytes) -> None:
    with path.open("ab") as log:
        log.write(data)


@pytest.fixture
def directory(sockdir: str) -> DomainDir:
    d = DomainDir(Path(sockdir) / "dom")
    d.path.mkdir()
    d.console_log.write_bytes(b"")
    return d


@pytest.fixture
async def qemu(tmp_path: Path) -> AsyncIterator[QEMUProcess]:
    """A process standing in for QEMU: the console ends when it exits."""
    proc = await QEMUProcess.spawn(["sleep", "60"], log_path=tmp_path / "qemu.log")
    yield proc
    await proc.stop(grace=0.1)


def test_the_console_log_is_an_option_of_the_serial_chardev() -> None:
    assert console_log_option("/run/qctl/domains/a,b/") == (
        ",logfile=/run/qctl/domains/a,,b/console.log,logappend=on"
    )


def test_the_first_serial_is_logged_when_the_builder_has_a_state_dir() -> None:
    domain = plan(
        parse_domain(
            "<domain type='qemu'><name>c</name><memory>1024</memory>"
            "<os><type machine='pc'>hvm</type></os><devices>"
            "<serial type='file'><source path='/tmp/s0'/></serial>"
            "<serial type='pty'/><serial type='pty'/></devices></domain>"
        ),
        QEMUCaps.from_json(CAPS_FILE.read_text()),
    )
    argv = build_command(domain, Features(), {}, binary="qemu", monitor="fd=3", console_dir="/d")
    chardevs = [argv[i + 1] for i, arg in enumerate(argv) if arg == "-chardev"][1:]
    assert chardevs == [
        "file,id=charserial0,path=/tmp/s0,logfile=/d/console.log,logappend=on",
        "pty,id=charserial1",
        "pty,id=charserial2",
    ]


async def test_a_reader_sees_output_written_before_and_after_it_attached(
    directory: DomainDir,
) -> None:
    _append(directory.console_log, b"booting\r\nQCTL-GUEST-READY\r\npart")
    async with Console(directory.console_log) as console:
        assert await anext(console) == "booting"
        assert await anext(console) == "QCTL-GUEST-READY"
        waiting = asyncio.ensure_future(anext(console))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        _append(directory.console_log, b"ial line\n")
        assert await asyncio.wait_for(waiting, 5) == "partial line"


async def test_several_readers_get_every_byte_once_in_order(
    directory: DomainDir, qemu: QEMUProcess
) -> None:
    expected = [f"line {n} " + "x" * (n % 7) for n in range(300)]
    data = "".join(f"{line}\r\n" for line in expected).encode()
    _append(directory.console_log, data[:1000])
    async with Console(directory.console_log, process=qemu) as console:
        late = console.reader()

        async def collect(reader: AsyncIterator[str]) -> list[str]:
            return [line async for line in reader]

        readers = [asyncio.ensure_future(collect(r)) for r in (console, late, console.reader())]
        # Written in odd-sized pieces, splitting lines (and \r\n pairs) between writes.
        for start in range(1000, len(data), 777):
            _append(directory.console_log, data[start : start + 777])
            await asyncio.sleep(0.01)
        await qemu.stop(grace=0.1)
        results = await asyncio.wait_for(asyncio.gather(*readers), 10)
    assert results == [expected, expected, expected]


async def test_closing_the_console_ends_its_waiting_readers(directory: DomainDir) -> None:
    _append(directory.console_log, b"one\n")
    console = Console(directory.console_log)
    reader = console.reader()
    waiting = asyncio.ensure_future(_lines(reader))
    await asyncio.sleep(0.05)
    await console.aclose()
    await console.aclose()  # idempotent
    assert await asyncio.wait_for(waiting, 5) == ["one"]


async def _lines(reader: AsyncIterator[str]) -> list[str]:
    return [line async for line in reader]


async def test_a_reader_from_the_end_sees_only_what_comes_next(directory: DomainDir) -> None:
    _append(directory.console_log, b"old\n")
    async with Console(directory.console_log) as console:
        reader = console.reader(from_end=True)
        waiting = asyncio.ensure_future(anext(reader))
        await asyncio.sleep(0.05)
        _append(directory.console_log, b"new\n")
        assert await asyncio.wait_for(waiting, 5) == "new"


async def test_wait_for_returns_the_match_and_the_next_wait_goes_on_after_it(
    directory: DomainDir,
) -> None:
    _append(directory.console_log, b"QCTL-NICS: eth0\nQCTL-NICS: eth0 eth1\n")
    async with Console(directory.console_log) as console:
        first = await console.wait_for(r"QCTL-NICS:(.*)", timeout=5)
        second = await console.wait_for(re.compile(r"QCTL-NICS:(.*)"), timeout=5)
        assert (first.group(1), second.group(1)) == (" eth0", " eth0 eth1")
        _append(directory.console_log, b"QCTL-NICS:")  # the rest of the line is on its way
        waiting = asyncio.ensure_future(console.wait_for(r"QCTL-NICS:(.*)", timeout=5))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        _append(directory.console_log, b" eth0 eth1 eth2\n")
        assert (await waiting).group(1) == " eth0 eth1 eth2"


async def test_wait_for_a_prompt_matches_the_incomplete_last_line(directory: DomainDir) -> None:
    async with Console(directory.console_log) as console:
        waiting = asyncio.ensure_future(console.wait_for("login: $", timeout=5, prompt=True))
        await asyncio.sleep(0.05)
        _append(directory.console_log, b"guest login: ")  # a prompt: no line end
        assert (await waiting).group(0) == "login: "
        _append(directory.console_log, b"root\n")
        assert await anext(console) == "root"


async def test_wait_for_times_out_with_the_last_lines(directory: DomainDir) -> None:
    _append(directory.console_log, "".join(f"l{n}\n" for n in range(80)).encode())
    async with Console(directory.console_log) as console:
        with pytest.raises(ConsoleError) as caught:
            await console.wait_for("READY", timeout=0.2)
    error = caught.value
    assert error.reason == "timeout" and error.pattern == "READY"
    assert error.lines == tuple(f"l{n}" for n in range(80 - RECENT_LINES, 80))
    assert str(error).startswith(
        f"the console did not show 'READY' within 0.2 s; last {RECENT_LINES} console lines:\n"
    )
    assert str(error).endswith("  | l79")


async def test_wait_for_stops_at_the_failure_pattern(directory: DomainDir) -> None:
    _append(directory.console_log, b"starting\nKernel panic - not syncing\nREADY\n")
    async with Console(directory.console_log) as console:
        with pytest.raises(ConsoleError, match="failure pattern 'Kernel panic'") as caught:
            await console.wait_for("READY", timeout=5, failure="Kernel panic")
    assert caught.value.reason == "failure"
    assert caught.value.failure_line == "Kernel panic - not syncing"
    assert caught.value.lines == ("starting", "Kernel panic - not syncing")


async def test_wait_for_fails_when_qemu_exits(directory: DomainDir, qemu: QEMUProcess) -> None:
    _append(directory.console_log, b"reboot: Power down")
    async with Console(directory.console_log, process=qemu) as console:
        waiting = asyncio.ensure_future(console.wait_for("READY", timeout=30))
        await asyncio.sleep(0.05)
        await qemu.stop(grace=0.1)
        with pytest.raises(ConsoleError, match="QEMU exited before the console showed 'READY'"):
            await asyncio.wait_for(waiting, 10)
        assert console.recent == ("reboot: Power down",)


async def test_read_bytes_gives_what_was_written_for_terminals(
    directory: DomainDir, qemu: QEMUProcess
) -> None:
    _append(directory.console_log, b"a\r\nb\r\nlogin: ")
    async with Console(directory.console_log, process=qemu) as console:
        assert await anext(console) == "a"
        assert await console.read_bytes() == b"b\r\nlogin: "
        assert console.tail() == ["a", "b", "login: "]
        assert console.written() == b"a\r\nb\r\nlogin: "
        await qemu.stop(grace=0.1)
        assert await console.read_bytes() == b""


async def test_send_writes_to_the_pty_and_drains_what_the_guest_writes(
    directory: DomainDir,
) -> None:
    master, slave = os.openpty()  # QEMU holds the master; the console opens the slave
    tty.setraw(slave)  # as QEMU makes it
    path = Path(os.ttyname(slave))
    os.close(slave)
    os.set_blocking(master, False)
    try:
        async with Console(directory.console_log, path) as console:
            await console.send("root\n")
            output = memoryview(b"echo " * 100_000)  # more than a pty holds: must be drained
            while output:
                try:
                    output = output[os.write(master, output) :]
                except BlockingIOError:
                    await asyncio.sleep(0.01)
            await console.send(b"\x03")
            got = b""
            async with asyncio.timeout(5):
                while len(got) < 6:
                    try:
                        got += os.read(master, 16)
                    except BlockingIOError:
                        await asyncio.sleep(0.01)
    finally:
        os.close(master)
    assert got == b"root\n\x03"


async def test_errors_name_the_missing_console(directory: DomainDir, sockdir: str) -> None:
    os.unlink(directory.console_log)
    async with Console(directory.console_log) as console:
        with pytest.raises(StateError, match="the domain has no console log"):
            await console.wait_for("x", timeout=1)
        with pytest.raises(StateError, match="takes no input: the domain's first serial"):
            await console.send("x")


def test_a_domain_without_a_console_is_named(tmp_path: Path) -> None:
    with pytest.raises(StateError, match="no domain named 'ghost' is running"):
        Console.named("ghost", state_root=tmp_path)

