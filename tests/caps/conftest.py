"""Fixtures of the capabilities tests: the recorded QEMU 7.2 session and its replay, fake
QEMU binaries, the real QEMU, and a check that a probe left no process or directory behind."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from fakeqmp import RECORDING_7_2, RECORDING_10_0, FakeQMPServer, Recording, write_fake_binary

from caps.support import HOST, FakeQEMU, Leftovers, Replay
from qctl.caps import QEMUCaps, probe

# The recorded probe of each QEMU the QEMU-backed tests run against (see tests/support.py).
RECORDINGS = {"qemu7.2": RECORDING_7_2, "qemu10.0": RECORDING_10_0}


@pytest.fixture
def recording(qemu_version: str | None) -> Recording:
    """The recorded probe of the QEMU this test runs against, free to edit; for a test not
    marked ``qemu``, of this project's reference QEMU 7.2."""
    return Recording.load(RECORDINGS[qemu_version or "qemu7.2"])


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
