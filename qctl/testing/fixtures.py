"""The plugin's guest fixtures (they need pytest-asyncio; see :mod:`qctl.testing.plugin`)."""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from qctl.conf import parse_domain
from qctl.qemu.domain import Domain
from qctl.testing.guest import BOOT_FAILURE, READY, Guest
from qctl.testing.support import bundled_guest_xml

__all__ = ["BOOT_TIMEOUT", "qctl_guest", "qctl_guest_module", "qctl_guest_session"]

BOOT_TIMEOUT = 120.0
_names = itertools.count()


@contextlib.asynccontextmanager
async def _booted(xml: str, ready: str | None, root: Path) -> AsyncIterator[Guest]:
    """Start ``xml`` under a unique name, wait until ``ready`` shows; stop it on leaving."""
    defn = parse_domain(xml)
    defn = dataclasses.replace(defn, name=f"{defn.name[:40]}-{os.getpid()}-{next(_names)}")
    dom = await Domain.start(defn, state_root=root, die_with_owner=True)
    console = dom.console()
    try:
        if ready is not None:
            await console.wait_for(ready, timeout=BOOT_TIMEOUT, failure=BOOT_FAILURE)
        yield Guest(dom, console)
    finally:
        try:
            await dom.stop(force=True)
        finally:
            await console.aclose()
            await dom.aclose()


@pytest_asyncio.fixture
async def qctl_guest(
    qctl_guest_xml: str, qctl_guest_ready: str | None, qctl_state_root: Path
) -> AsyncIterator[Guest]:
    """A guest booted for this test, force-stopped after it."""
    async with _booted(qctl_guest_xml, qctl_guest_ready, qctl_state_root) as guest:
        yield guest


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def qctl_guest_module(
    qctl_guest_xml: str, qctl_guest_ready: str | None, qctl_state_root: Path
) -> AsyncIterator[Guest]:
    """A guest booted once for this module's tests."""
    async with _booted(qctl_guest_xml, qctl_guest_ready, qctl_state_root) as guest:
        yield guest


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def qctl_guest_session(
    pytestconfig: pytest.Config, qctl_state_root: Path
) -> AsyncIterator[Guest]:
    """The bundled guest, booted once for the whole run."""
    xml = bundled_guest_xml(pytestconfig)
    async with _booted(xml, READY, qctl_state_root) as guest:
        yield guest
