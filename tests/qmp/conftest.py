"""Fixtures of the QMP tests: a fake QMP server, and a real paused QEMU for fd passing."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
from collections.abc import AsyncIterator
from typing import Any

import pytest
from fakeqmp import FakeQMPServer

from qctl.caps import locate_install


@pytest.fixture
async def server(sockdir: str) -> AsyncIterator[FakeQMPServer]:
    """A fake QMP server that answers ``echo`` with its arguments."""

    async def echo(arguments: dict[str, Any]) -> dict[str, Any]:
        return {"return": arguments}

    async with FakeQMPServer(os.path.join(sockdir, "qmp.sock")) as fake:
        fake.handlers["echo"] = echo
        yield fake


def listening(path: str) -> bool:
    """Whether QEMU accepts connections on ``path`` yet: it creates the socket file before it
    listens, so a connect made as soon as the file shows can be refused."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(path)
        except (FileNotFoundError, ConnectionRefusedError):
            return False
    return True


@pytest.fixture
async def qemu(
    sockdir: str, qemu_binary: str
) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    """A real QEMU, paused with machine 'none', and its QMP socket path."""
    path = os.path.join(sockdir, "qemu.sock")
    proc = await asyncio.create_subprocess_exec(
        qemu_binary, "-S", "-nodefaults", "-nographic", "-machine", "none",
        "-qmp", f"unix:{path},server=on,wait=off",
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env=locate_install(qemu_binary).environ(),
    )  # fmt: skip
    try:
        async with asyncio.timeout(10):
            while not listening(path):
                assert proc.returncode is None, "QEMU exited at start"
                await asyncio.sleep(0.005)
        yield proc, path
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
