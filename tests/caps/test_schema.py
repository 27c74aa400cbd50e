"""Schema paths over a small introspected schema, in QEMU's shapes (numbered type names)."""

from __future__ import annotations

from typing import Any

import pytest
from fakeqmp import Recording

from qctl.caps import QAPISchema
from qctl.caps.flags import SCHEMA_PATHS

SCHEMA: list[dict[str, Any]] = [
    {"name": "netdev_add", "meta-type": "command", "arg-type": "1", "ret-type": "0"},
    {"name": "query-migrate", "meta-type": "command", "arg-type": "0", "ret-type": "2"},
    {
        "name": "device_add",
        "meta-type": "command",
        "arg-type": "0",
        "ret-type": "0",
        "features": ["json-cli"],
    },
    {"name": "query-list", "meta-type": "command", "arg-type": "0", "ret-type": "5"},
    {"name": "query-either", "meta-type": "command", "arg-type": "0", "ret-type": "6"},
    {"name": "SHUTDOWN", "meta-type": "event", "arg-type": "7"},
    {"name": "0", "meta-type": "object", "members": []},
    {
        "name": "1",
        "meta-type": "object",
        "members": [{"name": "id", "type": "str"}, {"name": "type", "type": "3"}],
        "tag": "type",
        "variants": [{"case": "tap", "type": "4"}],
    },
    {
        "name": "2",
        "meta-type": "object",
        "members": [{"name": "status", "type": "3"}, {"name": "blocked-reasons", "type": "8"}],
    },
    {"name": "3", "meta-type": "enum", "values": ["tap", "wait-unplug"]},
    {"name": "4", "meta-type": "object", "members": [{"name": "fd", "type": "str"}]},
    {"name": "5", "meta-type": "array", "element-type": "2"},
    {"name": "6", "meta-type": "alternate", "members": [{"type": "str"}, {"type": "4"}]},
    {"name": "7", "meta-type": "object", "members": [{"name": "guest", "type": "bool"}]},
    {"name": "8", "meta-type": "array", "element-type": "str"},
    {"name": "9", "meta-type": "enum", "members": [{"name": "new-style"}]},
    {"name": "str", "meta-type": "builtin", "json-type": "string"},
    {"name": "bool", "meta-type": "builtin", "json-type": "boolean"},
]


@pytest.mark.parametrize(
    ("path", "resolves"),
    [
        ("netdev_add", True),
        ("netdev_add/arg-type", True),
        ("netdev_add/arg-type/id", True),
        ("netdev_add/arg-type/+tap", True),
        ("netdev_add/arg-type/+tap/fd", True),
        ("netdev_add/arg-type/+user", False),
        ("netdev_add/arg-type/type/=tap", True),
        ("netdev_add/arg-type/type/=vde", False),
        ("netdev_add/arg-type/missing", False),
        ("query-migrate/ret-type/status/=wait-unplug", True),
        ("query-migrate/ret-type/blocked-reasons", True),
        ("query-migrate/arg-type/blocked-reasons", False),
        ("device_add/$json-cli", True),
        ("device_add/$json-cli-hotplug", False),
        ("query-list/ret-type/status/=wait-unplug", True),  # through an array
        ("query-either/ret-type/fd", True),  # through an alternate
        ("SHUTDOWN/arg-type/guest", True),
        ("SHUTDOWN/ret-type", False),  # events return nothing
        ("no-such-command", False),
        ("2/status", False),  # types cannot be named: their names are not stable
        ("netdev_add/bogus", False),
    ],
)
def test_schema_paths(path: str, resolves: bool) -> None:
    assert QAPISchema(SCHEMA).resolves(path) is resolves


def test_enum_members_of_newer_qemu_count_as_values() -> None:
    schema = QAPISchema(
        [
            {"name": "cmd", "meta-type": "command", "arg-type": "9", "ret-type": "9"},
            *SCHEMA,
        ]
    )
    assert schema.resolves("cmd/arg-type/=new-style")


def test_events_are_listed() -> None:
    assert QAPISchema(SCHEMA).events() == {"SHUTDOWN"}


def test_every_table_path_resolves_on_qemu_7_2(recording: Recording) -> None:
    schema = QAPISchema(recording.reply("query-qmp-schema"))
    assert {path for path in SCHEMA_PATHS if schema.resolves(path)} == SCHEMA_PATHS
