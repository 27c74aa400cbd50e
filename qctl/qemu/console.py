"""The guest's serial console: every byte it wrote, any number of readers, and input.

The domain's first serial port keeps its own chardev (a ``pty``, as libvirt gives it, whose
path the live XML records; or a file, or a socket) and QEMU logs its output to a file in the
domain's state directory as well (``console.log``, the chardev's ``logfile=``). QEMU writes
the log whether or not anyone is attached, so it holds the whole output since QEMU started,
in order.

Reading follows the log, woken by inotify (no polling, no sleeps): a reader starts at the
first byte the guest wrote (or at the end, when asked), never misses nor repeats a byte, and
any number of readers, in this process or others, follow it independently. Input goes to
the pty (its slave side, opened on the first :meth:`Console.send`); what the guest writes
meanwhile is read from it and dropped (the log has it), so the guest's serial port never
stalls on a full buffer. Following the pty for output instead would need the exact log
offset at which it was opened, which a reader cannot learn; the log needs no such guess.

When a :class:`~qctl.qemu.process.QEMUProcess` is given, readers end (and
:meth:`ConsoleReader.wait_for` raises) once QEMU has exited and its last output was read.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import re
from collections import deque
from pathlib import Path

from qctl.conf import DomainDef, SerialType
from qctl.errors import ConsoleError, StateError
from qctl.qemu.process import QEMUProcess
from qctl.qemu.state import DomainDir, StateRoot
from qctl.qemu.status import read_status

__all__ = ["Console", "ConsoleReader", "console_log_option"]

#: how many lines a reader remembers for error messages
RECENT_LINES = 50
_IN_MODIFY = 0x2
_CHUNK = 65536


def console_log_option(directory: str) -> str:
    """What the first serial port's ``-chardev`` gains: its output logged to
    ``console.log`` in the domain's state ``directory`` (appended, never truncated)."""
    base = directory.rstrip("/").replace(",", ",,")
    return f",logfile={base}/console.log,logappend=on"


def _inotify(path: Path) -> int:
    """A non-blocking inotify fd watching ``path`` for writes."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = int(libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC))
    if fd < 0:
        raise StateError(f"inotify: {os.strerror(ctypes.get_errno())}")
    if libc.inotify_add_watch(fd, os.fsencode(path), _IN_MODIFY) < 0:
        errno = ctypes.get_errno()
        os.close(fd)
        raise StateError(f"cannot watch the console log {path}: {os.strerror(errno)}")
    return fd


class _LogSource:
    """The log file, opened once, and a broadcast of "it grew" (or "QEMU exited")."""

    def __init__(self, path: Path, process: QEMUProcess | None) -> None:
        self.path = path
        self._process = process
        self._fd: int | None = None
        self._watch: int | None = None
        self._waiters: list[asyncio.Future[None]] = []
        self._exit_task: asyncio.Task[None] | None = None
        self.ended = False  # QEMU has exited (or the console was closed): no more output
        self._closed = False

    def _open(self) -> int:
        if self._fd is None:
            try:
                self._fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
            except FileNotFoundError:
                raise StateError(f"the domain has no console log ({self.path})") from None
            watch = _inotify(self.path)
            asyncio.get_running_loop().add_reader(watch, self._on_inotify)
            self._watch = watch
            if self._process is not None:
                self._exit_task = asyncio.create_task(self._watch_exit(self._process))
        return self._fd

    async def _watch_exit(self, process: QEMUProcess) -> None:
        await process.wait()
        self.ended = True
        self._wake()

    def _on_inotify(self) -> None:
        assert self._watch is not None
        with contextlib.suppress(BlockingIOError):
            while os.read(self._watch, 4096):
                pass
        self._wake()

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def next_change(self) -> asyncio.Future[None]:
        """A future set at the next write to the log (or QEMU's exit, or the close). Take it
        *before* reading, so a write between the read and the wait is not missed."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._closed:
            waiter.set_result(None)
            return waiter
        self._open()
        self._waiters.append(waiter)
        return waiter

    def read(self, offset: int) -> bytes:
        """Everything in the log from ``offset`` on (nothing once closed)."""
        if self._closed:
            return b""
        fd = self._open()
        parts = []
        while chunk := os.pread(fd, _CHUNK, offset):
            parts.append(chunk)
            offset += len(chunk)
        return b"".join(parts)

    def size_now(self) -> int:
        """The log's current size (0 while QEMU has not created it)."""
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    async def aclose(self) -> None:
        """Stop following: readers waiting for output end as if QEMU had exited."""
        self._closed = self.ended = True
        self._wake()
        if self._exit_task is not None:
            self._exit_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._exit_task
            self._exit_task = None
        if self._watch is not None:
            asyncio.get_running_loop().remove_reader(self._watch)
            os.close(self._watch)
            self._watch = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


async def _writable(loop: asyncio.AbstractEventLoop, fd: int) -> None:
    """Until ``fd`` takes more bytes."""
    room: asyncio.Future[None] = loop.create_future()

    def ready() -> None:
        if not room.done():
            room.set_result(None)

    loop.add_writer(fd, ready)
    try:
        await room
    finally:
        loop.remove_writer(fd)


def _decode(raw: bytes) -> str:
    return raw.decode(errors="replace").rstrip("\r")


def _pattern_text(pattern: str | re.Pattern[str]) -> str:
    return pattern if isinstance(pattern, str) else pattern.pattern


class ConsoleReader:
    """One cursor over the console's output: ``async for line in reader``,
    :meth:`wait_for` and :meth:`read_bytes`, all consuming from the same position."""

    def __init__(self, source: _LogSource, *, from_end: bool = False) -> None:
        self._source = source
        self._offset = source.size_now() if from_end else 0
        self._buffer = b""  # read from the log, not consumed yet
        self._recent: deque[str] = deque(maxlen=RECENT_LINES)

    @property
    def recent(self) -> tuple[str, ...]:
        """The last lines this reader consumed (at most RECENT_LINES), oldest first."""
        return tuple(self._recent)

    async def _fill(self) -> bool:
        """Read what the guest wrote since; wait for it when there is nothing new.
        False once QEMU has exited and everything was read."""
        while True:
            change = self._source.next_change()
            data = self._source.read(self._offset)
            if data:
                change.cancel()
                self._offset += len(data)
                self._buffer += data
                return True
            if self._source.ended:
                change.cancel()
                return False
            await change

    def _line(self) -> str | None:
        """The next complete line out of the buffer (without its line end), if any."""
        end = self._buffer.find(b"\n")
        if end < 0:
            return None
        line, self._buffer = _decode(self._buffer[:end]), self._buffer[end + 1 :]
        self._recent.append(line)
        return line

    def _rest(self) -> str:
        """The incomplete last line, consumed."""
        line, self._buffer = _decode(self._buffer), b""
        self._recent.append(line)
        return line

    def __aiter__(self) -> ConsoleReader:
        return self

    async def __anext__(self) -> str:
        """The next complete line (without its line end); after QEMU exited, the last
        incomplete one, then the end."""
        while (line := self._line()) is None:
            if not await self._fill():
                if self._buffer:
                    return self._rest()
                raise StopAsyncIteration
        return line

    async def read_bytes(self) -> bytes:
        """The bytes the guest wrote that this reader has not consumed yet, as written
        (for terminals: prompts have no line end), waiting for at least one.
        ``b''`` once QEMU has exited and everything was read."""
        while not self._buffer:
            if not await self._fill():
                return b""
        data, self._buffer = self._buffer, b""
        return data

    async def wait_for(
        self,
        pattern: str | re.Pattern[str],
        *,
        timeout: float,  # noqa: ASYNC109 - the issue's API: a bound every caller must give
        failure: str | re.Pattern[str] | None = None,
        prompt: bool = False,
    ) -> re.Match[str]:
        """Consume lines until one matches ``pattern`` (``re.search``) and return the match.

        Only complete lines are matched (the guest may write a line in several pieces), but
        with ``prompt`` the incomplete last line is tried too, since a prompt such as
        ``login:`` has no line end; a match there consumes what was written of it.
        :class:`~qctl.errors.ConsoleError`, quoting the last lines, when ``failure`` matches
        first, when ``timeout`` seconds pass, or when QEMU exits.
        """
        wanted = re.compile(pattern) if isinstance(pattern, str) else pattern
        bad = re.compile(failure) if isinstance(failure, str) else failure
        try:
            async with asyncio.timeout(timeout):
                while True:
                    while (line := self._line()) is not None:
                        if (found := self._match(line, wanted, bad)) is not None:
                            return found
                    if prompt and self._buffer:
                        text = _decode(self._buffer)
                        if wanted.search(text) or (bad is not None and bad.search(text)):
                            found = self._match(self._rest(), wanted, bad)
                            assert found is not None
                            return found
                    if not await self._fill():
                        if self._buffer and (
                            found := self._match(self._rest(), wanted, bad)
                        ) is not None:
                            return found
                        raise ConsoleError(
                            f"QEMU exited before the console showed {wanted.pattern!r}",
                            reason="exited",
                            pattern=wanted.pattern,
                            lines=self.recent,
                        )
        except TimeoutError:
            raise ConsoleError(
                f"the console did not show {wanted.pattern!r} within {timeout:g} s",
                reason="timeout",
                pattern=wanted.pattern,
                lines=self.recent,
            ) from None

    def _match(
        self, line: str, wanted: re.Pattern[str], bad: re.Pattern[str] | None
    ) -> re.Match[str] | None:
        if bad is not None and bad.search(line):
            raise ConsoleError(
                f"the console showed the failure pattern {bad.pattern!r} before "
                f"{wanted.pattern!r}",
                reason="failure",
                pattern=wanted.pattern,
                lines=self.recent,
                failure_line=line,
            )
        return wanted.search(line)


class Console(ConsoleReader):
    """The guest's serial console: read it (it is itself a reader starting at the first
    byte the guest wrote), make more readers with :meth:`reader`, and :meth:`send` input.

    An async context manager; :meth:`aclose` (idempotent) closes the log, the inotify watch
    and the input connection. Readers made by :meth:`reader` share them: on closing, those
    waiting for output end (``async for`` stops; ``wait_for`` raises its "exited" error).
    """

    def __init__(
        self, log_path: Path, tty: Path | None = None, *, process: QEMUProcess | None = None
    ) -> None:
        super().__init__(_LogSource(log_path, process))
        self.log_path = log_path
        self.tty = tty
        self._fd: int | None = None

    @classmethod
    def of(
        cls, directory: DomainDir, live: DomainDef, process: QEMUProcess | None = None
    ) -> Console:
        """The console of the domain whose state directory is ``directory`` and live
        definition ``live`` (its first serial port: input goes to it when it is a pty)."""
        serial = live.serials[0] if live.serials else None
        pty = serial is not None and serial.type is SerialType.PTY and serial.source_path
        return cls(directory.console_log, Path(pty) if pty else None, process=process)

    @classmethod
    def named(cls, name: str, *, state_root: StateRoot | Path | str | None = None) -> Console:
        """The console of the running domain ``name`` (for another process, like the CLI):
        its readers end when that domain's QEMU exits."""
        root = state_root if isinstance(state_root, StateRoot) else StateRoot(state_root)
        directory = root.domain(name)
        status = read_status(directory)
        if not directory.console_log.exists():
            raise StateError(
                f"domain {name!r} has no console: give it a <serial type='pty'/> to have one"
            )
        return cls.of(directory, status.live, QEMUProcess(status.identity, directory.log_file))

    def reader(self, *, from_end: bool = False) -> ConsoleReader:
        """Another independent reader: from the first byte the guest wrote, or, with
        ``from_end``, from what it writes next."""
        return ConsoleReader(self._source, from_end=from_end)

    def written(self) -> bytes:
        """Everything the guest wrote until now, as written, without moving any reader."""
        try:
            return self.log_path.read_bytes()
        except FileNotFoundError:
            return b""

    def tail(self, count: int = RECENT_LINES) -> list[str]:
        """The last ``count`` lines of the log as it is now, without moving any reader."""
        lines = [_decode(line) for line in self.written().split(b"\n")]
        if lines and not lines[-1]:
            lines.pop()
        return lines[-count:]

    async def send(self, text: str | bytes) -> None:
        """Write ``text`` to the guest's serial port (a ``str`` is sent as UTF-8)."""
        fd = self._input()
        loop = asyncio.get_running_loop()
        view = memoryview(text.encode() if isinstance(text, str) else text)
        while view:
            try:
                view = view[os.write(fd, view) :]
            except BlockingIOError:  # the guest reads slower than we type: wait for room
                await _writable(loop, fd)

    def _input(self) -> int:
        """The pty's slave side, opened once; what the guest writes on it is dropped."""
        if self._fd is None:
            if self.tty is None:
                raise StateError(
                    "this console takes no input: the domain's first serial port is not a pty"
                )
            try:
                fd = os.open(self.tty, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK | os.O_CLOEXEC)
            except OSError as exc:
                raise StateError(f"cannot open the console {self.tty}: {exc.strerror}") from exc
            asyncio.get_running_loop().add_reader(fd, self._discard, fd)
            self._fd = fd
        return self._fd

    @staticmethod
    def _discard(fd: int) -> None:
        """Read and drop the guest's output on the pty (the log has it): a pty nobody reads
        would fill up and stall the guest's serial port."""
        with contextlib.suppress(OSError):
            os.read(fd, _CHUNK)

    async def aclose(self) -> None:
        """Close the input and the log (idempotent)."""
        if self._fd is not None:
            asyncio.get_running_loop().remove_reader(self._fd)
            os.close(self._fd)
            self._fd = None
        await self._source.aclose()

    async def __aenter__(self) -> Console:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
