"""``qemu-monitor-command``'s text: QMP JSON or a bare command name, checked before sending."""

from __future__ import annotations

import pytest

from qctl.errors import ConfigError
from qctl.qemu.rawmonitor import parse_monitor_command


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"execute": "query-status"}', ("query-status", {})),
        (
            '{"execute": "qom-list", "arguments": {"path": "/machine"}, "id": 7}',
            ("qom-list", {"path": "/machine"}),
        ),
        ("  query-pci ", ("query-pci", {})),
    ],
)
def test_commands_are_parsed(text: str, expected: tuple[str, dict[str, object]]) -> None:
    assert parse_monitor_command(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("info network", "not a QMP command: 'info network'"),
        ("", "not a QMP command: ''"),
        ('{"execute": ', "the QMP command is not valid JSON"),
        ('{"exec": "x"}', 'an object with an "execute" string'),
        ('{"execute": "x", "arguments": []}', '"arguments" must be an object'),
        ('{"execute": "x", "argument": {}}', "unknown members: argument"),
    ],
)
def test_bad_commands_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")):
        parse_monitor_command(text)
