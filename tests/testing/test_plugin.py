"""The pytest plugin as its users meet it: an inner pytest run (pytester, a subprocess)
with guests of each scope, a domain from the test's own XML, and a failing test whose
report carries the guest's console and QEMU log. Also: the example tests stay short and
pass ``mypy --strict``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from support import REPO_ROOT, guest_dir

EXAMPLES = [REPO_ROOT / "tests" / "guest" / f"test_plugin_{s}.py" for s in ("function", "module")]

INNER = '''
import pytest
from qctl.testing import Guest

pids = []

async def test_module_guest_is_booted(qctl_guest_module: Guest) -> None:
    pids.append(qctl_guest_module.domain.process.pid)
    assert "QCTL-GUEST-READY" in qctl_guest_module.console.recent

async def test_module_guest_is_the_same_one(qctl_guest_module: Guest) -> None:
    assert pids == [qctl_guest_module.domain.process.pid]
    assert qctl_guest_module.domain.running

async def test_session_guest_beside_it(qctl_guest_session: Guest) -> None:
    assert qctl_guest_session.domain.process.pid not in pids
    await qctl_guest_session.console.send("session-guest\\n")
    await qctl_guest_session.console.wait_for("session-guest", timeout=30)

async def test_failing(qctl_guest: Guest) -> None:
    await qctl_guest.console.send("deliberately-failing\\n")
    await qctl_guest.console.wait_for("deliberately-failing", timeout=30)
    assert False, "on purpose"
'''

OWN_XML = '''
import pytest
from qctl.testing import Guest

@pytest.fixture(scope="module")
def qctl_guest_xml() -> str:
    return """<domain type='qemu'><name>mine</name><memory unit='MiB'>64</memory>
      <os><type machine='pc'>hvm</type></os><devices><serial type='pty'/></devices></domain>"""

@pytest.fixture(scope="module")
def qctl_guest_ready() -> None:
    return None

async def test_own_domain(qctl_guest: Guest) -> None:
    assert qctl_guest.domain.name.startswith("mine-")
    assert qctl_guest.domain.live.memory.kib == 64 * 1024
'''


@pytest.fixture
def inner(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    base = guest_dir()
    if not (base / "initrd.img").is_file():
        pytest.skip(f"test guest not built in {base}")
    monkeypatch.setenv("QCTL_GUEST_DIR", str(base))
    pytester.makeini("[pytest]\nasyncio_mode = auto\n")
    return pytester


@pytest.mark.qemu
@pytest.mark.guest
def test_guests_of_each_scope_and_a_failure_report(inner: pytest.Pytester) -> None:
    inner.makepyfile(test_inner=INNER, test_own_xml=OWN_XML)
    result = inner.runpytest_subprocess("-p", "no:cacheprovider", timeout=600)
    result.assert_outcomes(passed=4, failed=1)
    text = result.stdout.str()
    report = text[text.index("_ test_failing _") :]
    assert "AssertionError: on purpose" in report
    assert "last 50 console lines" in report and "QCTL-GUEST-READY" in report
    assert "deliberately-failing" in report
    assert "QEMU log" in report


def _readme_example() -> str:
    text = (REPO_ROOT / "README.md").read_text()
    section = text[text.index("## Testing with qctl") :]
    found = re.search(r"```python\n(.*?)```", section, re.S)
    assert found is not None
    return found.group(1)


@pytest.mark.qemu
@pytest.mark.guest
def test_the_readme_example_passes_in_a_namespace_of_its_own(inner: pytest.Pytester) -> None:
    if os.geteuid() != 0:
        pytest.skip("--qctl-unshare-net needs root")
    example = _readme_example()
    assert len(example.splitlines()) <= 10
    inner.makepyfile(test_readme_example=example)
    result = inner.runpytest_subprocess("--qctl-unshare-net", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_the_examples_are_short_and_pass_mypy_strict(tmp_path: Path) -> None:
    for path in EXAMPLES:
        assert len(path.read_text().splitlines()) <= 15, path
    readme = tmp_path / "test_readme_example.py"
    readme.write_text(_readme_example())
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", *map(str, EXAMPLES), str(readme)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout
    assert "Success: no issues found in 3 source files" in result.stdout


def test_the_plugin_is_registered_by_the_entry_point(pytestconfig: pytest.Config) -> None:
    plugin = pytestconfig.pluginmanager.get_plugin("qctl")
    assert plugin is not None and Path(plugin.__file__).name == "plugin.py"
