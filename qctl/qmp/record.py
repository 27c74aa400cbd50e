"""Recording QMP conversations, so tests can replay what a real QEMU said.

A :class:`Recorder` is handed to :class:`~qctl.qmp.client.QMPClient`, which reports the
greeting and, for every command answered, the command with its arguments and QEMU's reply or
error. :class:`JSONLinesRecorder` writes them as JSON lines, the format the test suite's fake
QMP server replays::

    {"greeting": {"QMP": {...}}}
    {"cmd": "query-version", "args": {}}
    {"reply": {"qemu": {...}, "package": "..."}}
    {"cmd": "query-events", "args": {}}
    {"error": {"class": "CommandNotFound", "desc": "..."}}

Each command line is immediately followed by its outcome, even when commands run
concurrently (a pair is written when the answer arrives). ``qmp_capabilities`` is not
recorded: it belongs to the handshake, which any replaying server performs itself.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Protocol, TextIO

__all__ = ["JSONLinesRecorder", "Recorder"]


class Recorder(Protocol):
    """Receives a QMP conversation as it happens."""

    def greeting(self, greeting: Mapping[str, Any]) -> None:
        """The server's greeting, once per connection."""

    def exchange(
        self, command: str, arguments: Mapping[str, Any], outcome: Mapping[str, Any]
    ) -> None:
        """A command and its outcome: ``{"reply": value}`` or ``{"error": {"class", "desc"}}``."""


class JSONLinesRecorder:
    """Writes the conversation to a text stream, one JSON object per line (see the module)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def greeting(self, greeting: Mapping[str, Any]) -> None:
        """Write the greeting line."""
        self._write({"greeting": greeting})

    def exchange(
        self, command: str, arguments: Mapping[str, Any], outcome: Mapping[str, Any]
    ) -> None:
        """Write the command line and its outcome line together."""
        self._write({"cmd": command, "args": arguments}, outcome)

    def _write(self, *records: Mapping[str, Any]) -> None:
        lines = (json.dumps(r, sort_keys=True, default=_plain) + "\n" for r in records)
        self._stream.write("".join(lines))


def _plain(value: object) -> dict[str, Any]:
    """Read-only mappings (the client hands out ``MappingProxyType``) as plain dicts."""
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"cannot record a {type(value).__name__}")
