"""Recording a QMP conversation as JSON lines, and reading it back as the fake server does."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from fakeqmp import FakeQMPServer, Recording

from qctl.errors import QMPCommandError
from qctl.qmp import JSONLinesRecorder, connect_qmp


async def test_the_recorder_writes_greeting_then_each_command_with_its_outcome(
    server: FakeQMPServer, tmp_path: Path
) -> None:
    stream = io.StringIO()
    async with connect_qmp(server.path, recorder=JSONLinesRecorder(stream)) as client:
        await client.execute("echo", {"x": 1})
        with pytest.raises(QMPCommandError):
            await client.execute("query-nothing")
    records = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert records == [
        {"greeting": server.greeting},
        {"cmd": "echo", "args": {"x": 1}},
        {"reply": {"x": 1}},
        {"cmd": "query-nothing", "args": {}},
        {
            "error": {
                "class": "CommandNotFound",
                "desc": "The command query-nothing has not been found",
            }
        },
    ]
    path = tmp_path / "session.jsonl"
    path.write_text(stream.getvalue())
    replay = Recording.load(path)
    assert replay.greeting == server.greeting
    assert replay.reply("echo", {"x": 1}) == {"x": 1}
    assert replay.outcome("query-nothing") == records[-1]
