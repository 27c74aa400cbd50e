"""The domain lifecycle on the real QEMU with the bundled guest (TCG, private netns).

Start with user, bridge and ethernet NICs and read the guest's own interface report; taps
exist on the bridge while it runs and are gone after stop; another process connects by name
and stops it; ``kill -9`` is noticed and everything released; failed starts leave nothing.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from support import guest_domain_xml, open_fd_count, unique, wait_for_nics

from qctl import (
    Domain,
    HostError,
    ProcessError,
    StateError,
    SysfsError,
    parse_domain,
)
from qctl.host import Netlink

pytestmark = [pytest.mark.qemu, pytest.mark.guest]

BOOT_TIMEOUT = 90.0

MAC_USER = "52:54:00:10:00:01"
MAC_BRIDGE = "52:54:00:10:00:02"
MAC_ETH = "52:54:00:10:00:03"


def _nics_xml(bridge: str) -> str:
    return f"""
    <interface type='user'><mac address='{MAC_USER}'/><model type='virtio'/></interface>
    <interface type='bridge'>
      <mac address='{MAC_BRIDGE}'/><source bridge='{bridge}'/><model type='virtio'/>
    </interface>
    <interface type='ethernet'><mac address='{MAC_ETH}'/><model type='e1000e'/></interface>
"""


def _qemu_processes(name: str) -> list[int]:
    """Live (non-zombie) QEMU processes started for domain ``name``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if f"guest={name},debug-threads=on".encode() in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


async def _links(netlink: Netlink) -> set[str]:
    return {link.name for link in await netlink.list_links()}


@pytest.fixture
def console(tmp_path: Path) -> Path:
    return tmp_path / "serial.log"


@pytest.fixture
def state_root(tmp_path: Path) -> Path:
    return tmp_path / "state"


async def test_start_guest_sees_every_nic_and_stop_releases_taps(
    guest_paths: tuple[Path, Path],
    bridge: Callable[..., Awaitable[str]],
    netlink: Netlink,
    console: Path,
    state_root: Path,
) -> None:
    br = await bridge()
    name = unique("dom")
    defn = parse_domain(guest_domain_xml(name, _nics_xml(br), console=console))
    dom = await Domain.start(defn, state_root=state_root)
    try:
        async with asyncio.timeout(BOOT_TIMEOUT):
            nics = await wait_for_nics(console, lambda n: len(n) == 3)
        assert {mac: drv for mac, (_, drv) in nics.items()} == {
            MAC_USER: "virtio_net",
            MAC_BRIDGE: "virtio_net",
            MAC_ETH: "e1000e",
        }
        taps = {i.alias: str(i.target_dev) for i in dom.live.interfaces if i.target_dev}
        assert set(taps) == {"net1", "net2"}
        bridged = await netlink.get_link(taps["net1"])
        assert bridged is not None and bridged.master == br
        assert str(bridged.mac) == "fe" + MAC_BRIDGE[2:]
        plain = await netlink.get_link(taps["net2"])
        assert plain is not None and plain.master is None and plain.up
        live = dom.xml()
        assert "<driver name=\"qemu\"/>" in live  # TCG: userspace virtio-net, recorded
        assert [i.name for i in Domain.list(state_root)] == [name]
    finally:
        await dom.stop(grace=20)
    assert not set(taps.values()) & await _links(netlink)
    assert Domain.list(state_root) == []
    assert not _qemu_processes(name)


async def test_another_process_connects_by_name_and_stops(
    guest_paths: tuple[Path, Path], console: Path, state_root: Path, netlink: Netlink
) -> None:
    name = unique("dom")
    devices = f"<interface type='ethernet'><mac address='{MAC_ETH}'/></interface>"
    defn = parse_domain(guest_domain_xml(name, devices, console=console))
    dom = await Domain.start(defn, state_root=state_root)  # QEMU outlives the handle
    tap = str(dom.live.interfaces[0].target_dev)
    pid = dom.process.pid
    await dom.aclose()
    # This handle is closed; QEMU runs on. A separate process takes over by name.
    script = (
        "import asyncio, sys\n"
        "from qctl import Domain\n"
        "async def main():\n"
        "    async with Domain.connect(sys.argv[1], state_root=sys.argv[2]) as dom:\n"
        "        await dom.stop(force=True)\n"
        "asyncio.run(main())\n"
    )
    done = await asyncio.create_subprocess_exec(sys.executable, "-c", script, name, str(state_root))
    assert await done.wait() == 0
    assert not _qemu_processes(name)
    assert tap not in await _links(netlink)
    assert Domain.list(state_root) == []
    with pytest.raises(StateError, match="no domain named"):
        await Domain.connect(name, state_root=state_root)
    assert pid not in _qemu_processes(name)


async def test_kill_9_is_noticed_and_everything_released(
    guest_paths: tuple[Path, Path],
    bridge: Callable[..., Awaitable[str]],
    netlink: Netlink,
    console: Path,
    state_root: Path,
) -> None:
    br = await bridge()
    name = unique("dom")
    defn = parse_domain(guest_domain_xml(name, _nics_xml(br), console=console))
    dom = await Domain.start(defn, state_root=state_root)
    taps = {str(i.target_dev) for i in dom.live.interfaces if i.target_dev}
    assert taps <= await _links(netlink)
    os.kill(dom.process.pid, signal.SIGKILL)
    async with asyncio.timeout(10):
        await dom.wait_exit()
    assert not dom.running
    assert not taps & await _links(netlink)
    assert not dom.directory.path.exists()
    await dom.stop()  # stopping an exited domain is a no-op
    await dom.aclose()


async def test_kill_9_without_a_controller_is_released_on_connect(
    guest_paths: tuple[Path, Path], console: Path, state_root: Path, netlink: Netlink
) -> None:
    name = unique("dom")
    devices = f"<interface type='ethernet'><mac address='{MAC_ETH}'/></interface>"
    defn = parse_domain(guest_domain_xml(name, devices, console=console))
    dom = await Domain.start(defn, state_root=state_root)
    pid = dom.process.pid
    directory = dom.directory.path
    await dom.aclose()
    os.kill(pid, signal.SIGKILL)
    # Not our child once the handle is closed? It is, but nobody watches it now: a new
    # connect must find QEMU gone (a zombie counts as gone) and release the ledger.
    for _ in range(100):
        if not _qemu_processes(name):
            break
        await asyncio.sleep(0.05)
    with pytest.raises(StateError, match="not running"):
        await Domain.connect(name, state_root=state_root)
    assert not directory.exists()
    assert Domain.list(state_root) == []


@pytest.mark.parametrize(
    ("devices", "error", "message"),
    [
        pytest.param(
            "<interface type='bridge'><source bridge='nosuchbr0'/><model type='virtio'/>"
            "</interface>",
            HostError,
            "nosuchbr0",
            id="bad-bridge",
        ),
        pytest.param(
            "<interface type='ethernet'><model type='nosuch-nic'/></interface>",
            ProcessError,
            "nosuch-nic",
            id="qemu-refuses-option",
        ),
        pytest.param(
            "<interface type='ethernet'/>"
            "<hostdev mode='subsystem' type='pci' managed='no'><source>"
            "<address domain='0x0000' bus='0x7f' slot='0x1f' function='0x7'/>"
            "</source></hostdev>",
            SysfsError,
            "no PCI device 0000:7f:1f.7",
            id="vfio-absent-device",
        ),
    ],
)
async def test_failed_start_leaves_nothing_behind(
    guest_paths: tuple[Path, Path],
    netlink: Netlink,
    console: Path,
    state_root: Path,
    devices: str,
    error: type[Exception],
    message: str,
) -> None:
    name = unique("dom")
    defn = parse_domain(guest_domain_xml(name, devices, console=console))
    links_before = await _links(netlink)
    fds_before = open_fd_count()
    with pytest.raises(error, match=message):
        await Domain.start(defn, state_root=state_root)
    assert await _links(netlink) == links_before
    assert open_fd_count() == fds_before
    assert not (state_root / "domains" / name).exists()
    assert not _qemu_processes(name)


def test_domain_list_of_an_empty_root(tmp_path: Path) -> None:
    assert Domain.list(tmp_path / "none") == []
