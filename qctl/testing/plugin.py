"""The pytest plugin (entry point ``pytest11``): fixtures that boot guests for a test.

Fixtures:

``qctl_netns`` (session)
    Skips the test unless links can be made without touching the host: root, in a private
    network namespace (``unshare --net pytest …``, or ``pytest --qctl-unshare-net``, which
    makes one for the whole run). Under CI (``$CI`` set) it fails instead of skipping.
``qctl_bridge`` (session)
    The name of a bridge in that namespace, deleted at the end.
``qctl_state_root`` (session)
    A private temporary state root (short path: UNIX socket paths are limited).
``qctl_guest``, ``qctl_guest_module``, ``qctl_guest_session``
    A booted :class:`~qctl.testing.Guest` (domain and console) per test, per module, per
    run. It runs ``qctl_guest_xml`` (module scope; override it to boot your own domain;
    the default is the bundled guest) under a unique name, waits for ``qctl_guest_ready``
    (override it; ``None`` waits for nothing), and is force-stopped when its scope ends.

Loop scopes: pytest-asyncio runs a fixture and the tests using it in one event loop only if
their loop scopes agree. The plugin marks every test using a module- or session-scoped guest
with ``asyncio(loop_scope=…)`` of that scope, so tests need no ``loop_scope`` of their own
(an explicit one is kept). With ``asyncio_mode = strict`` tests still need their
``@pytest.mark.asyncio``. One test cannot await on a module guest and a session guest at
once: they live in different loops (it runs in the session's).

When a test using a guest fails, its report gets the console's last lines and QEMU's log.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import tempfile
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from qctl.testing.guest import READY, Guest
from qctl.testing.netns import in_private_netns, unshare_net
from qctl.testing.support import bundled_guest_xml, missing

# The guest fixtures need pytest-asyncio; without it the plugin offers the others only.
if importlib.util.find_spec("pytest_asyncio") is not None:
    from qctl.testing.fixtures import qctl_guest, qctl_guest_module, qctl_guest_session

__all__ = [
    "qctl_bridge",
    "qctl_guest",
    "qctl_guest_module",
    "qctl_guest_ready",
    "qctl_guest_session",
    "qctl_guest_xml",
    "qctl_netns",
    "qctl_state_root",
]

_SCOPED_GUESTS = {"qctl_guest_module": "module", "qctl_guest_session": "session"}
_SCOPE_ORDER = ("function", "class", "module", "package", "session")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("qctl")
    group.addoption(
        "--qctl-unshare-net",
        action="store_true",
        help="run the whole session in a new network namespace (root; no route out)",
    )
    parser.addini("qctl_guest_dir", "where scripts/build-guest put the test guest", default="")


def pytest_configure(config: pytest.Config) -> None:
    # Before pytest or a test starts a thread: a namespace is per thread, inherited by new ones.
    if config.getoption("qctl_unshare_net"):
        unshare_net()


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run each test in the event loop of the widest-scoped guest it uses."""
    for item in items:
        scopes = [s for n, s in _SCOPED_GUESTS.items() if n in getattr(item, "fixturenames", ())]
        marker = item.get_closest_marker("asyncio")
        if not scopes or marker is None:
            continue
        if marker.kwargs.get("loop_scope") or marker.kwargs.get("scope"):
            continue
        widest = max(scopes, key=_SCOPE_ORDER.index)
        item.add_marker(pytest.mark.asyncio(loop_scope=widest), append=False)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failed test's report gets, for each guest it used, the console and QEMU's log."""
    report = yield
    if report.failed:
        for value in getattr(item, "funcargs", {}).values():
            if isinstance(value, Guest):
                report.sections.extend(value.report())
    return report


@pytest.fixture(scope="session")
def qctl_netns() -> None:
    """Skip (fail under CI) unless links can be made here without touching the host."""
    if os.geteuid() != 0:
        missing("qctl_netns needs root (CAP_NET_ADMIN) in a private network namespace")
    if not in_private_netns():
        missing(
            "qctl_netns: refusing to make links in the host's network namespace; run "
            "`unshare --net pytest …` or `pytest --qctl-unshare-net`"
        )


@pytest.fixture(scope="session")
def qctl_bridge(qctl_netns: None) -> Iterator[str]:
    """A bridge in the private namespace, up, deleted at the end of the run."""
    name = f"qctlbr{os.getpid() % 100000}"
    subprocess.run(["ip", "link", "add", name, "type", "bridge"], check=True)
    try:
        subprocess.run(["ip", "link", "set", name, "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "link", "del", name], check=False)


@pytest.fixture(scope="session")
def qctl_state_root() -> Iterator[Path]:
    """A private temporary state root for the run."""
    path = Path(tempfile.mkdtemp(prefix="qctl-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def qctl_guest_xml(pytestconfig: pytest.Config) -> str:
    """The domain the guest fixtures boot (its name is replaced by a unique one): the
    bundled test guest. Skips (fails under CI) when the guest was not built."""
    return bundled_guest_xml(pytestconfig)


@pytest.fixture(scope="module")
def qctl_guest_ready() -> str | None:
    """What the console shows once the guest is up (``None``: do not wait)."""
    return READY
