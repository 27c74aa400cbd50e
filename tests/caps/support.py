"""Helpers of the capabilities tests (the fixtures are in conftest.py)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

from fakeqmp import Recording

from qctl.caps import HostFacts, QEMUCaps

# Host facts the replay tests use, so they do not depend on this machine.
HOST = HostFacts(vhost_net=True, tun=True)

Replay = Callable[[Recording], Awaitable[QEMUCaps]]
FakeQEMU = Callable[..., Path]


def start_log(binary: Path) -> Path:
    """Where a fake binary logs its starts."""
    return binary.parent / f"{binary.name}.log"


def children() -> set[int]:
    """PIDs whose parent is this process (zombies included)."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == os.getpid():
            found.add(int(entry))
    return found


class Leftovers:
    """Where probes make their temporary directories; :meth:`check` that nothing is left."""

    def __init__(self, tmpdir: Path) -> None:
        self.tmpdir = tmpdir
        self._children = children()

    def check(self) -> None:
        assert list(self.tmpdir.iterdir()) == [], "a probe left its directory behind"
        assert children() - self._children == set(), "a probe left a process behind"


async def wait_until(condition: Callable[[], bool], limit: float = 10.0) -> None:
    """Poll ``condition`` (state another process changes) until true, for ``limit`` seconds."""
    async with asyncio.timeout(limit):
        while not condition():  # noqa: ASYNC110 - no event to wait on across processes
            await asyncio.sleep(0.01)
