"""A fake QMP server for tests: replays recorded QEMU sessions, or misbehaves on purpose.

Two ways to use it (standard library only, so it also runs outside the venv):

- in-process: ``async with FakeQMPServer(path, recording=rec) as server: …`` listens on a
  UNIX socket, sends the greeting, answers ``qmp_capabilities`` and ``quit`` itself, and
  answers every other command from the recording, matched by (command, arguments) whatever
  the order (probes are concurrent). ``server.handlers[cmd]`` overrides a command with a
  coroutine (return the wire reply, or ``None`` for no reply at all); ``server.emit()`` sends
  an event; ``server.received`` lists what came in.
- as a stand-in QEMU binary: ``python fakeqmp.py --recording FILE [--mode M] [--log FILE]
  [--barrier N] QEMU-ARGS…`` serves on the path of ``-qmp unix:PATH,…`` like QEMU and exits
  after ``quit``. :func:`write_fake_binary` makes an executable wrapper for it.

Modes: ``qmp`` (behave), ``garbage`` (send a non-QMP banner), ``silent`` (accept, never
speak), ``hangup`` (accept and close); as a binary also ``fail`` (print an error on stderr
and exit 1 before listening) and ``die`` (exit 2 when asked ``query-qmp-schema``).
``--log`` appends one JSON line per start (pid, argv, mode of the socket's directory);
``--barrier N`` waits until the log has N lines before listening, which only ends if N fake
binaries run at the same time.

Recordings are the JSON lines :mod:`qctl.qmp.record` writes (``.gz`` is read too).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import gzip
import json
import os
import stat
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_GREETING: dict[str, Any] = {
    "QMP": {
        "version": {"qemu": {"major": 7, "minor": 2, "micro": 0}, "package": "fake"},
        "capabilities": ["oob"],
    }
}
GARBAGE = b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n"
DATA_DIR = Path(__file__).resolve().parent / "data" / "caps"
RECORDING_7_2 = DATA_DIR / "qemu-7.2.jsonl"
RECORDING_10_0 = DATA_DIR / "qemu-10.0.jsonl"

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any] | None]]


def _key(command: str, arguments: dict[str, Any] | None) -> tuple[str, str]:
    return command, json.dumps(arguments or {}, sort_keys=True)


@dataclass
class Recording:
    """A recorded session: the greeting and each command's outcome by (command, arguments).

    An outcome is ``{"reply": value}`` or ``{"error": {"class": …, "desc": …}}``.
    """

    greeting: dict[str, Any]
    outcomes: dict[tuple[str, str], dict[str, Any]]

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Recording:
        """Read a JSON lines recording (gzip-compressed if the name ends in ``.gz``)."""
        raw = Path(path).read_bytes()
        if str(path).endswith(".gz"):
            raw = gzip.decompress(raw)
        greeting: dict[str, Any] = DEFAULT_GREETING
        outcomes: dict[tuple[str, str], dict[str, Any]] = {}
        pending: tuple[str, str] | None = None
        for number, line in enumerate(raw.decode().splitlines(), 1):
            record = json.loads(line)
            if "greeting" in record:
                greeting = record["greeting"]
            elif "cmd" in record:
                pending = _key(record["cmd"], record.get("args"))
            elif pending is not None and ("reply" in record or "error" in record):
                outcomes[pending] = record
                pending = None
            else:
                raise ValueError(f"{path}:{number}: unexpected record {line[:80]!r}")
        return cls(greeting, outcomes)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the recording as JSON lines."""
        lines = [json.dumps({"greeting": self.greeting})]
        for (command, arguments), outcome in sorted(self.outcomes.items()):
            lines.append(json.dumps({"cmd": command, "args": json.loads(arguments)}))
            lines.append(json.dumps(outcome))
        Path(path).write_text("\n".join(lines) + "\n")

    def copy(self) -> Recording:
        """A deep copy, to edit without touching the original."""
        return copy.deepcopy(self)

    def outcome(
        self, command: str, arguments: dict[str, Any] | None = None
    ) -> dict[str, Any] | None:
        """The recorded outcome of this exact command, if any."""
        return self.outcomes.get(_key(command, arguments))

    def reply(self, command: str, arguments: dict[str, Any] | None = None) -> Any:
        """The recorded successful reply (to edit in place); KeyError when there is none."""
        return self.outcomes[_key(command, arguments)]["reply"]

    def set_reply(self, command: str, arguments: dict[str, Any] | None, reply: Any) -> None:
        """Record (or replace) a successful reply."""
        self.outcomes[_key(command, arguments)] = {"reply": reply}

    def set_error(
        self, command: str, arguments: dict[str, Any] | None, error_class: str, desc: str
    ) -> None:
        """Record (or replace) an error reply."""
        self.outcomes[_key(command, arguments)] = {"error": {"class": error_class, "desc": desc}}

    def commands(self) -> set[str]:
        """Every command name the recording answers."""
        return {command for command, _ in self.outcomes}


def _split_objects(data: bytes) -> tuple[list[dict[str, Any]], bytes]:
    """The complete JSON objects at the start of a QMP input stream, and the rest.

    QMP needs no newlines between messages (qemu.qmp sends none), so objects are found by
    their braces; bytes outside objects (the space sent along with a passed fd) are skipped.
    """
    objects, depth, start, in_string, escaped = [], 0, 0, False, False
    for index, byte in enumerate(data):
        if in_string:
            if escaped:
                escaped = False
            elif byte == ord("\\"):
                escaped = True
            elif byte == ord('"'):
                in_string = False
        elif byte == ord('"'):
            in_string = True
        elif byte == ord("{"):
            if depth == 0:
                start = index
            depth += 1
        elif byte == ord("}") and depth:
            depth -= 1
            if depth == 0:
                objects.append(json.loads(data[start : index + 1]))
                start = index + 1
    return objects, data[start:] if depth else b""


def _line(message: dict[str, Any]) -> bytes:
    return json.dumps(message).encode() + b"\r\n"


class FakeQMPServer:
    """A QMP server on a UNIX socket that replays a :class:`Recording` (see the module)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        recording: Recording | None = None,
        greeting: dict[str, Any] | None = None,
        mode: str = "qmp",
    ) -> None:
        self.path = os.fspath(path)
        self.recording = recording
        if greeting is None:
            greeting = recording.greeting if recording is not None else DEFAULT_GREETING
        self.greeting = greeting
        self.mode = mode
        self.handlers: dict[str, Handler] = {}
        #: sent right after the greeting, as QEMU sends a reply it still owed the monitor's
        #: previous client (or, rarely, right before it)
        self.after_greeting: list[dict[str, Any]] = []
        self.before_greeting: list[dict[str, Any]] = []
        self.received: list[tuple[str, dict[str, Any]]] = []
        self.connections = 0
        self.quit_requested = asyncio.Event()
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def clients(self) -> int:
        """How many client connections are open now."""
        return len(self._writers)

    async def start(self) -> None:
        """Listen on :attr:`path`."""
        self._server = await asyncio.start_unix_server(self._serve, path=self.path)

    async def close(self) -> None:
        """Stop listening and drop every connection."""
        if self._server is not None:
            self._server.close()
        await self.drop_connections()
        if self._server is not None:
            await self._server.wait_closed()

    async def drop_connections(self) -> None:
        """Close every client connection, as a dying QEMU would."""
        writers, self._writers = self._writers, set()
        for writer in writers:
            writer.close()
        for writer in writers:
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def __aenter__(self) -> FakeQMPServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def emit(self, name: str, data: dict[str, Any] | None = None) -> None:
        """Send an event to every connected client."""
        now = time.time()
        event: dict[str, Any] = {
            "event": name,
            "timestamp": {"seconds": int(now), "microseconds": int(now % 1 * 1_000_000)},
        }
        if data is not None:
            event["data"] = data
        for writer in tuple(self._writers):
            writer.write(_line(event))
            await writer.drain()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        answering: set[asyncio.Task[None]] = set()
        try:
            if self.mode == "hangup":
                return
            if self.mode == "garbage":
                writer.write(GARBAGE)
                await writer.drain()
            if self.mode in ("garbage", "silent"):
                await reader.read()
                return
            for message in self.before_greeting:
                writer.write(_line(message))
            writer.write(_line(self.greeting))
            for message in self.after_greeting:
                writer.write(_line(message))
            await writer.drain()
            pending = b""
            while chunk := await reader.read(65536):
                requests, pending = _split_objects(pending + chunk)
                for request in requests:
                    # Each request is answered in its own task, so a handler that waits (or
                    # never answers) does not hold up the others; replies carry the id.
                    task = asyncio.create_task(self._respond(writer, request))
                    answering.add(task)
                    task.add_done_callback(answering.discard)
        except ConnectionError:
            pass
        finally:
            for task in answering:
                task.cancel()
            self._writers.discard(writer)
            writer.close()

    async def _respond(self, writer: asyncio.StreamWriter, request: dict[str, Any]) -> None:
        command = str(request.get("execute") or request.get("exec-oob"))
        arguments = request.get("arguments", {})
        self.received.append((command, arguments))
        answer = await self._answer(command, arguments)
        if answer is None or writer.is_closing():
            return
        if "id" in request:
            answer = {**answer, "id": request["id"]}
        try:
            writer.write(_line(answer))
            await writer.drain()
        except ConnectionError:
            return
        if command == "quit":
            self.quit_requested.set()
            writer.close()

    async def _answer(self, command: str, arguments: dict[str, Any]) -> dict[str, Any] | None:
        if command in self.handlers:
            return await self.handlers[command](arguments)
        if command in ("qmp_capabilities", "quit"):
            return {"return": {}}
        if self.recording is not None:
            outcome = self.recording.outcome(command, arguments)
            if outcome is not None:
                if "reply" in outcome:
                    return {"return": outcome["reply"]}
                return {"error": outcome["error"]}
            if command in self.recording.commands():
                desc = f"fake QMP: no recorded reply to {command} {json.dumps(arguments)}"
                return {"error": {"class": "GenericError", "desc": desc}}
        return {
            "error": {
                "class": "CommandNotFound",
                "desc": f"The command {command} has not been found",
            }
        }


def write_fake_binary(
    directory: Path,
    recording: Path,
    *,
    mode: str = "qmp",
    log: Path | None = None,
    barrier: int | None = None,
    name: str = "fake-qemu",
) -> Path:
    """An executable stand-in for a QEMU binary that serves ``recording`` (see the module)."""
    args = [sys.executable, str(Path(__file__).resolve()), "--recording", str(recording)]
    args += ["--mode", mode]
    if log is not None:
        args += ["--log", str(log)]
    if barrier is not None:
        args += ["--barrier", str(barrier)]
    script = directory / name
    script.write_text("#!/bin/sh\nexec " + " ".join(f"'{a}'" for a in args) + ' "$@"\n')
    script.chmod(0o755)
    return script


def read_log(log: Path) -> list[dict[str, Any]]:
    """The start records a fake binary appended to its ``--log``."""
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines()]


def _qmp_path(qemu_args: list[str]) -> str:
    """The socket path of ``-qmp unix:PATH,…`` (``,,`` is an escaped comma)."""
    spec = qemu_args[qemu_args.index("-qmp") + 1]
    if not spec.startswith("unix:"):
        raise SystemExit(f"fake QEMU: unsupported -qmp {spec}")
    return spec[len("unix:") :].replace(",,", "\0").split(",")[0].replace("\0", ",")


async def _die(arguments: dict[str, Any]) -> None:
    print("fake QEMU: died on query-qmp-schema", file=sys.stderr, flush=True)
    os._exit(2)


async def _run(path: str, recording: Recording, mode: str) -> None:
    async with FakeQMPServer(
        path, recording=recording, mode="qmp" if mode == "die" else mode
    ) as server:
        if mode == "die":
            server.handlers["query-qmp-schema"] = _die
        await server.quit_requested.wait()


def main(argv: list[str] | None = None) -> int:
    """Behave like a QEMU binary started for a probe."""
    parser = argparse.ArgumentParser(description="fake QEMU: replays a QMP recording")
    parser.add_argument("--recording", required=True)
    parser.add_argument("--mode", default="qmp")
    parser.add_argument("--log")
    parser.add_argument("--barrier", type=int)
    options, qemu_args = parser.parse_known_args(argv)
    if options.mode == "fail":
        print("qemu-system-x86_64: -machine none: fake failure", file=sys.stderr)
        return 1
    path = _qmp_path(qemu_args)
    if options.log:
        record = {
            "pid": os.getpid(),
            "argv": qemu_args,
            "dir_mode": stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode),
        }
        with open(options.log, "a") as log:
            log.write(json.dumps(record) + "\n")
    if options.barrier:
        deadline = time.monotonic() + 20
        while len(read_log(Path(options.log))) < options.barrier:
            if time.monotonic() > deadline:
                print("fake QEMU: barrier never reached", file=sys.stderr)
                return 3
            time.sleep(0.01)
    asyncio.run(_run(path, Recording.load(options.recording), options.mode))
    return 0


if __name__ == "__main__":
    sys.exit(main())
