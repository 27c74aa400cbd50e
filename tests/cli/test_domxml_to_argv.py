"""``qctl domxml-to-argv`` never runs the ``<emulator>`` of the document it is given (issue 11,
item 10): it probes the binary the caller names, or uses the cached caps of the document's
emulator, and runs that emulator only when asked to."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from fakeqmp import RECORDING_7_2, write_fake_binary

DOMAIN = """<domain type='qemu'>
  <name>dry</name>
  <memory unit='MiB'>64</memory>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices><emulator>{emulator}</emulator></devices>
</domain>
"""


def _argv(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "qctl.cli.main", "domxml-to-argv", *args],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )
    assert "Traceback" not in result.stderr
    return result


@pytest.fixture
def rig(tmp_path: Path) -> tuple[Path, Path, Path, dict[str, str]]:
    marker = tmp_path / "ran"
    trap = tmp_path / "trap"
    trap.write_text(f"#!/bin/sh\ntouch {marker}\nexit 1\n")
    trap.chmod(0o755)
    domain = tmp_path / "domain.xml"
    domain.write_text(DOMAIN.format(emulator=trap))
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache"), "QCTL_QEMU": "/nonexistent"}
    return marker, trap, domain, env


def test_the_document_emulator_is_not_run(
    rig: tuple[Path, Path, Path, dict[str, str]], tmp_path: Path
) -> None:
    marker, _trap, domain, env = rig
    fake = write_fake_binary(tmp_path, RECORDING_7_2)
    named = _argv(str(domain), "--emulator", str(fake), "--json", env=env)
    assert named.returncode == 0, named.stderr
    assert f'"{fake}"' in named.stdout.splitlines()[1]  # the argv starts with the named binary
    # No --emulator, nothing cached for the document's: the default binary (missing here).
    default = _argv(str(domain), env=env)
    assert default.returncode == 7
    assert default.stderr == "qctl: /nonexistent: no such QEMU binary\n"
    assert not marker.exists()


def test_the_document_emulator_runs_only_when_asked(
    rig: tuple[Path, Path, Path, dict[str, str]],
) -> None:
    marker, _trap, domain, env = rig
    asked = _argv(str(domain), "--probe-document-emulator", env=env)
    assert asked.returncode == 7 and len(asked.stderr.splitlines()) == 1
    assert marker.exists()
