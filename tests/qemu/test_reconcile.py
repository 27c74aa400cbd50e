"""Reconciliation: a controller that dies mid-operation, and the next one finishing the job.

A child process connects to the domain and dies (``os._exit``) at a chosen point of an
attach or a detach. The parent then connects, which reconciles the ledger with QEMU's own
view: a half-done attach is undone (netdev removed, tap gone) or adopted when QEMU has the
device, and a detach QEMU completed unseen is finished.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from support import guest_domain_xml, unique, wait_for_nics

from qctl import Domain, parse_domain
from qctl.host import Netlink

pytestmark = [pytest.mark.qemu, pytest.mark.guest]

SPARE_PORTS = "\n".join(
    f"    <controller type='pci' index='{i}' model='pcie-root-port'/>" for i in range(1, 3)
)
MAC = "52:54:00:50:00:01"

CRASHER = """
import asyncio, os, sys
from qctl import Domain

name, root, bridge, point = sys.argv[1:5]
xml = (f"<interface type='bridge'><mac address='MAC'/><source bridge='{bridge}'/>"
       "<model type='virtio'/><alias name='ua-r0'/></interface>")

async def main():
    dom = await Domain.connect(name, state_root=root)
    when, method = point.split("-", 1)
    real = getattr(dom.monitor, method)
    async def die(*args, **kwargs):
        if when == "after":
            await real(*args, **kwargs)   # QEMU got it; the controller dies before recording
            await asyncio.sleep(1.0)      # let QEMU (and the guest) act on it
        os._exit(7)
    setattr(dom.monitor, method, die)
    if method == "device_del":
        await dom.detach_device("ua-r0")
    else:
        await dom.attach_device(xml)

asyncio.run(main())
""".replace("MAC", MAC)


@pytest.fixture
async def guest(
    guest_paths: tuple[Path, Path], tmp_path: Path
) -> AsyncIterator[tuple[str, Path, Path]]:
    """A booted guest with no NIC; no handle is left open (a child process takes over)."""
    console = tmp_path / "serial.log"
    name = unique("rec")
    state = tmp_path / "state"
    defn = parse_domain(guest_domain_xml(name, SPARE_PORTS, console=console))
    dom = await Domain.start(defn, state_root=state)  # QEMU outlives this handle
    try:
        async with asyncio.timeout(90):
            await wait_for_nics(console, lambda nics: nics == {})
    finally:
        await dom.aclose()
    try:
        yield name, state, console
    finally:
        async with Domain.connect(name, state_root=state) as dom:
            await dom.stop(force=True)


async def _crash_at(name: str, state: Path, bridge: str, point: str) -> None:
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CRASHER, name, str(state), bridge, point
    )
    assert await child.wait() == 7


async def _links(netlink: Netlink) -> set[str]:
    return {link.name for link in await netlink.list_links()}


async def test_crash_before_device_add_is_rolled_back(
    guest: tuple[str, Path, Path], bridge: Callable[..., Awaitable[str]], netlink: Netlink
) -> None:
    name, state, _ = guest
    br = await bridge()
    links_before = await _links(netlink)
    await _crash_at(name, state, br, "before-device_add")
    async with Domain.connect(name, state_root=state) as dom:
        assert dom.ledger.get("ua-r0") is None
        assert "hostua-r0" not in await dom.monitor.netdevs()
        assert "ua-r0" not in await dom.monitor.peripherals()
        assert "ua-r0" not in dom.xml()
    assert await _links(netlink) == links_before


async def test_crash_after_device_add_is_adopted(
    guest: tuple[str, Path, Path], bridge: Callable[..., Awaitable[str]], netlink: Netlink
) -> None:
    name, state, console = guest
    br = await bridge()
    links_before = await _links(netlink)
    await _crash_at(name, state, br, "after-device_add")
    async with Domain.connect(name, state_root=state) as dom:
        entry = dom.ledger.get("ua-r0")
        assert entry is not None and entry.state == "attached"
        assert "ua-r0" in dom.xml() and MAC in dom.xml()
        async with asyncio.timeout(30):
            await wait_for_nics(console, lambda nics: MAC in nics)
        assert entry.tap in await _links(netlink)
        await dom.detach_device("ua-r0")
    assert await _links(netlink) == links_before


async def test_detach_completed_while_nobody_watched_is_finished(
    guest: tuple[str, Path, Path], bridge: Callable[..., Awaitable[str]], netlink: Netlink
) -> None:
    name, state, console = guest
    br = await bridge()
    links_before = await _links(netlink)
    async with Domain.connect(name, state_root=state) as dom:
        await dom.attach_device(
            f"<interface type='bridge'><mac address='{MAC}'/><source bridge='{br}'/>"
            "<model type='virtio'/><alias name='ua-r0'/></interface>"
        )
    await _crash_at(name, state, br, "after-device_del")
    async with Domain.connect(name, state_root=state) as dom:
        assert dom.ledger.get("ua-r0") is None
        assert "ua-r0" not in dom.xml()
        assert "hostua-r0" not in await dom.monitor.netdevs()
    assert await _links(netlink) == links_before
    async with asyncio.timeout(30):
        await wait_for_nics(console, lambda nics: MAC not in nics)
