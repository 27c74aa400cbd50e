"""Soak: 200 attach/detach cycles on one running guest leak nothing.

Open fds, taps and the controller's resident memory are measured after a warm-up and at
the end; none may grow (memory within a small allowance for allocator noise). Each cycle's
detach waits for the guest to release the device (DEVICE_DELETED), so the guest really
takes part.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from support import guest_domain_xml, open_fd_count, unique, wait_for_nics

from qctl import DetachResult, Domain, parse_domain
from qctl.host import Netlink

pytestmark = [pytest.mark.qemu, pytest.mark.guest]

CYCLES = 200
WARMUP = 20
RSS_ALLOWANCE_KIB = 4096
MAC = "52:54:00:60:00:01"


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS in /proc/self/status")


async def test_200_attach_detach_cycles_leak_nothing(
    guest_paths: tuple[Path, Path],
    tmp_path: Path,
    bridge: Callable[..., Awaitable[str]],
    netlink: Netlink,
) -> None:
    br = await bridge()
    console = tmp_path / "serial.log"
    ports = "<controller type='pci' index='1' model='pcie-root-port'/>"
    defn = parse_domain(guest_domain_xml(unique("soak"), ports, console=console))
    nic = (
        f"<interface type='bridge'><mac address='{MAC}'/>"
        f"<source bridge='{br}'/><model type='virtio'/><alias name='ua-soak'/></interface>"
    )
    dom = await Domain.start(defn, state_root=tmp_path / "state", netlink=netlink)
    try:
        async with asyncio.timeout(90):
            await wait_for_nics(console, lambda nics: nics == {})
        baseline: tuple[int, int, int] | None = None
        for cycle in range(CYCLES):
            if cycle == WARMUP:
                baseline = (open_fd_count(), len(await netlink.list_links()), rss_kib())
            await dom.attach_device(nic)
            # Unplug only once the guest has the NIC, as a user would: a guest still
            # probing a device refuses to release it (DEVICE_UNPLUG_GUEST_ERROR).
            async with asyncio.timeout(30):
                await wait_for_nics(console, lambda nics: MAC in nics)
            assert await dom.detach_device("ua-soak", wait=10) is DetachResult.DETACHED
            async with asyncio.timeout(30):
                await wait_for_nics(console, lambda nics: MAC not in nics)
        assert baseline is not None
        fds, links, rss = open_fd_count(), len(await netlink.list_links()), rss_kib()
        assert fds == baseline[0], "open fds grew"
        assert links == baseline[1], "taps were left behind"
        assert rss - baseline[2] < RSS_ALLOWANCE_KIB, f"RSS grew {rss - baseline[2]} KiB"
        assert len(dom.ledger) == 0
    finally:
        await dom.stop(force=True)
