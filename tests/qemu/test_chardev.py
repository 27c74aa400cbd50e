"""Serial ports: the chardev argument of each kind, and the pty paths QEMU reports put into
the live definition."""

from __future__ import annotations

from typing import Any

import pytest

from qctl.conf import SerialDef, SerialType, parse_domain
from qctl.qemu.chardev import record_ptys, serial_chardev, with_pty_paths
from qctl.qemu.monitor import Monitor


@pytest.mark.parametrize(
    ("serial", "arg"),
    [
        (SerialDef(type=SerialType.PTY, alias="serial0"), "pty,id=charserial0"),
        (SerialDef(type=SerialType.NULL, alias="serial0"), "null,id=charserial0"),
        (
            SerialDef(type=SerialType.FILE, source_path="/l,og", alias="ua-c"),
            "file,id=charua-c,path=/l,,og",
        ),
        (
            SerialDef(type=SerialType.UNIX, source_path="/s", source_mode="bind", alias="s1"),
            "socket,id=chars1,path=/s,server=on,wait=off",
        ),
        (
            SerialDef(type=SerialType.UNIX, source_path="/s", alias="s1"),
            "socket,id=chars1,path=/s,server=on,wait=off",
        ),
        (
            SerialDef(type=SerialType.UNIX, source_path="/s", source_mode="connect", alias="s1"),
            "socket,id=chars1,path=/s",
        ),
    ],
)
def test_serial_chardev(serial: SerialDef, arg: str) -> None:
    assert serial_chardev(serial) == arg


DOMAIN = parse_domain(
    "<domain type='qemu'><name>d</name><memory>65536</memory><os><type>hvm</type></os>"
    "<devices><serial type='pty'><alias name='serial0'/></serial>"
    "<serial type='file'><source path='/log'/><alias name='serial1'/></serial>"
    "<serial type='pty'><alias name='serial2'/></serial></devices></domain>",
    live=True,
)


def test_record_ptys_sets_the_paths_qemu_reported() -> None:
    live = record_ptys(
        DOMAIN,
        {"charserial0": "pty:/dev/pts/7", "charserial1": "file", "charmonitor": "unix:/x"},
    )
    assert [s.source_path for s in live.serials] == ["/dev/pts/7", "/log", None]


class _Client:
    """Answers ``query-chardev`` as QEMU 7.2 does; records what was asked."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def execute(self, command: str, args: dict[str, Any] | None = None) -> Any:
        self.asked.append(command)
        return [
            {"frontend-open": False, "filename": "pty:/dev/pts/3", "label": "charserial0"},
            {"frontend-open": True, "filename": "unix:/m,server=on", "label": "charmonitor"},
        ]


async def test_with_pty_paths_asks_qemu_only_when_there_is_a_pty() -> None:
    client = _Client()
    monitor = Monitor(client)  # type: ignore[arg-type]
    live = await with_pty_paths(monitor, DOMAIN)
    assert live.serials[0].source_path == "/dev/pts/3"
    assert client.asked == ["query-chardev"]
    no_pty = parse_domain(
        "<domain type='qemu'><name>d</name><memory>65536</memory><os><type>hvm</type></os>"
        "<devices><serial type='null'/></devices></domain>"
    )
    assert await with_pty_paths(monitor, no_pty) is no_pty
    assert client.asked == ["query-chardev"]
