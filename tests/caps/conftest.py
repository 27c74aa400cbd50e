"""Fixtures of the capabilities tests: the recorded QEMU 7.2 session and its replay, fake
QEMU binaries, the real QEMU, and a check that a probe left no process or directory behind."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from fakeqmp import RECORDING_7_2, FakeQMPServer, Recording, write_fake_binary

from caps.support import HOST, FakeQEMU, Leftovers, Replay
from qctl.caps import QEMUCaps, probe

QEMU_BINARY = "qemu-system-x86_64"


@pytest.fixture
def recording() -> Recording:
    """The recorded probe of this project's reference QEMU 7.2, free to edit."""
    return Recording.load(RECORDING_7_2)


@pytest.fixture
def replay(sockdir: str) -> Replay:
    """Probe a recording through the fake QMP server (as a running QEMU's socket)."""

    async def run(recording: Recording) -> QEMUCaps:
        path = os.path.join(sockdir, "replay.sock")
        async with FakeQMPServer(path, recording=recording):
            return await probe(qmp_socket=path, host=HOST)

    return run


@pytest.fixture
def fake_qemu(tmp_path: Path) -> FakeQEMU:
    """Make a fake QEMU binary replaying a recording; it logs each start to NAME.log."""

    def make(
        mode: str = "qmp",
        *,
        recording: Path = RECORDING_7_2,
        barrier: int | None = None,
        name: str = "fake-qemu",
    ) -> Path:
        log = tmp_path / f"{name}.log"
        return write_fake_binary(
            tmp_path, recording, mode=mode, log=log, barrier=barrier, name=name
        )

    return make


@pytest.fixture
def leftovers(sockdir: str, monkeypatch: pytest.MonkeyPatch) -> Leftovers:
    """Probes in this test make their temporary directories in a private, watched place."""
    tmpdir = Path(sockdir) / "tmp"
    tmpdir.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmpdir))
    return Leftovers(tmpdir)


@pytest.fixture
def qemu_binary() -> str:
    """The real qemu-system-x86_64 (a skip when absent, a failure under CI)."""
    path = shutil.which(QEMU_BINARY)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{QEMU_BINARY} not found (CI is set, so this is a failure)")
        pytest.skip(f"{QEMU_BINARY} not found")
    return path
