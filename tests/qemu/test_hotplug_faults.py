"""Faults during hot-plug on the real QEMU: every step failed, cancelled, or QEMU killed.

After each fault: no tap, no fd in this process, no netdev or device or named fd in QEMU,
the ledger and the status file as they were, and the live XML matching QEMU.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from support import guest_domain_xml, open_fd_count, unique, wait_for_nics, wait_until

from qctl import Domain, HotplugError, QMPCommandError, QMPError, QMPTimeoutError, parse_domain
from qctl.host import Netlink
from qctl.qemu import hotplug

pytestmark = [pytest.mark.qemu, pytest.mark.guest]

SPARE_PORTS = "\n".join(
    f"    <controller type='pci' index='{i}' model='pcie-root-port'/>" for i in range(1, 4)
)
STEPS = ["send_fd", "netdev_add", "device_add", "set_link"]
STAGE = {"send_fd": "getfd"}  # the stage is named after the QMP command
MAC = "52:54:00:40:00:01"


def nic_xml(bridge: str, model: str = "virtio") -> str:
    return (
        f"<interface type='bridge'><mac address='{MAC}'/><source bridge='{bridge}'/>"
        f"<model type='{model}'/><link state='down'/><alias name='ua-f0'/></interface>"
    )


@pytest.fixture
async def guest(
    guest_paths: tuple[Path, Path], tmp_path: Path, netlink: Netlink
) -> AsyncIterator[Domain]:
    console = tmp_path / "serial.log"
    defn = parse_domain(guest_domain_xml(unique("flt"), SPARE_PORTS, console=console))
    dom = await Domain.start(defn, state_root=tmp_path / "state", netlink=netlink)
    try:
        async with asyncio.timeout(90):
            await wait_for_nics(console, lambda nics: nics == {})
        await dom.capabilities()
        yield dom
    finally:
        await dom.stop(force=True)


async def _links(netlink: Netlink) -> set[str]:
    return {link.name for link in await netlink.list_links()}


async def _snapshot(dom: Domain, netlink: Netlink) -> dict[str, Any]:
    return {
        "links": await _links(netlink),
        "fds": open_fd_count(),
        "ledger": [e.to_json() for e in dom.ledger],
        "xml": dom.xml(),
        "status": dom.directory.read_status()["ledger"],
        "peripherals": await dom.monitor.peripherals(),
        "netdevs": await dom.monitor.netdevs(),
    }


async def _removed_late(dom: Domain, alias: str) -> None:
    """Wait for the background job a late DEVICE_DELETED starts to end: the ledger drops
    ``alias`` first, the job's status writes are on disk when it lets the lock go."""
    async with asyncio.timeout(30):
        await wait_until(lambda: dom.ledger.get(alias) is None)
        async with dom.runtime.lock.held():
            pass


async def _assert_nothing_leaked(dom: Domain, netlink: Netlink, before: dict[str, Any]) -> None:
    after = await _snapshot(dom, netlink)
    assert after == before
    for name in ("ua-f0-tap0",):  # no fd left behind in QEMU under the name qctl passed
        with pytest.raises(QMPCommandError):
            await dom.monitor.close_fd(name)


@pytest.mark.parametrize("step", STEPS)
async def test_a_failing_step_is_undone(
    guest: Domain, bridge: Callable[..., Awaitable[str]], netlink: Netlink, step: str
) -> None:
    dom = guest
    br = await bridge()
    before = await _snapshot(dom, netlink)
    real = getattr(dom.monitor, step)

    async def failing(*args: Any, **kwargs: Any) -> None:
        if step == "device_add":
            # QEMU has the device, but its reply is lost: the undo must unplug it. (A
            # refusal, QMPCommandError, means QEMU created nothing: nothing is undone.)
            await real(*args, **kwargs)
            raise QMPTimeoutError(f"{step}: no reply from QEMU (injected)")
        raise QMPCommandError(step, "GenericError", f"injected failure of {step}")

    setattr(dom.monitor, step, failing)
    try:
        with pytest.raises(HotplugError, match=f"failed at {STAGE.get(step, step)}") as caught:
            await dom.attach_device(nic_xml(br))
    finally:
        delattr(dom.monitor, step)
    assert caught.value.stage == STAGE.get(step, step) and caught.value.alias == "ua-f0"
    assert isinstance(caught.value.__cause__, QMPError)
    await _assert_nothing_leaked(dom, netlink, before)


async def test_qemu_refusing_device_add_is_undone(
    guest: Domain, bridge: Callable[..., Awaitable[str]], netlink: Netlink
) -> None:
    dom = guest
    br = await bridge()
    before = await _snapshot(dom, netlink)
    with pytest.raises(HotplugError, match="device_add") as caught:
        await dom.attach_device(nic_xml(br, model="nosuch-nic"))
    assert "nosuch-nic" in str(caught.value.__cause__)
    await _assert_nothing_leaked(dom, netlink, before)


@pytest.mark.parametrize("sent", [False, True], ids=["before-sending", "after-sending"])
@pytest.mark.parametrize("step", STEPS)
async def test_cancelling_the_caller_at_each_step_is_undone(
    guest: Domain, bridge: Callable[..., Awaitable[str]], netlink: Netlink, step: str, sent: bool
) -> None:
    """Cancelled while a step's command is about to go out, or once it went out and QEMU
    may have run it (the reply not yet read): either way everything is undone."""
    dom = guest
    br = await bridge()
    before = await _snapshot(dom, netlink)
    real = getattr(dom.monitor, step)
    entered = asyncio.Event()

    async def stuck(*args: Any, **kwargs: Any) -> None:
        if sent:
            await real(*args, **kwargs)
        entered.set()
        await asyncio.Event().wait()

    setattr(dom.monitor, step, stuck)
    try:
        task = asyncio.create_task(dom.attach_device(nic_xml(br)))
        async with asyncio.timeout(30):
            await entered.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        delattr(dom.monitor, step)
    await _assert_nothing_leaked(dom, netlink, before)


async def test_qemu_killed_mid_attach_releases_everything(
    guest: Domain, bridge: Callable[..., Awaitable[str]], netlink: Netlink
) -> None:
    dom = guest
    br = await bridge()
    links_before = await _links(netlink)
    fds_before = open_fd_count()
    real = dom.monitor.device_add

    async def kill_first(*args: Any, **kwargs: Any) -> None:
        os.kill(dom.process.pid, signal.SIGKILL)
        await dom.process.wait()
        await real(*args, **kwargs)

    dom.monitor.device_add = kill_first  # type: ignore[method-assign]
    with pytest.raises(HotplugError, match="device_add"):
        await dom.attach_device(nic_xml(br))
    async with asyncio.timeout(10):
        await dom.wait_exit()
    assert await _links(netlink) == links_before
    assert open_fd_count() <= fds_before
    assert not dom.directory.path.exists()


async def test_a_cancelled_detach_is_still_finished_by_the_event(
    guest: Domain, bridge: Callable[..., Awaitable[str]], netlink: Netlink
) -> None:
    dom = guest
    br = await bridge()
    before = await _snapshot(dom, netlink)
    live = await dom.attach_device(nic_xml(br).replace("<link state='down'/>", ""))
    assert live.alias == "ua-f0"
    entered = asyncio.Event()
    real_del = dom.monitor.device_del

    async def sent(device: str) -> None:
        await real_del(device)
        entered.set()

    dom.monitor.device_del = sent  # type: ignore[method-assign]
    try:
        task = asyncio.create_task(dom.detach_device("ua-f0", wait=30))
        await entered.wait()
        task.cancel()  # the caller gives up while QEMU and the guest do the unplug
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        dom.monitor.device_del = real_del  # type: ignore[method-assign]
    await _removed_late(dom, "ua-f0")
    await _assert_nothing_leaked(dom, netlink, before)


async def test_an_unplug_the_rollback_cannot_confirm_keeps_the_device_uncertain(
    guest: Domain,
    bridge: Callable[..., Awaitable[str]],
    netlink: Netlink,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    dom = guest
    br = await bridge()
    before = await _snapshot(dom, netlink)
    monkeypatch.setattr(hotplug, "_ROLLBACK_UNPLUG_TIMEOUT", 0.5)
    real_del = dom.monitor.device_del

    async def set_link_fails(*args: Any) -> None:
        raise QMPCommandError("set_link", "GenericError", "injected failure of set_link")

    async def guest_silent(device: str) -> None:  # the unplug request gets no answer
        return None

    dom.monitor.set_link = set_link_fails  # type: ignore[method-assign]
    dom.monitor.device_del = guest_silent  # type: ignore[method-assign]
    try:
        with pytest.raises(HotplugError, match="set_link"):
            await dom.attach_device(nic_xml(br))
    finally:
        del dom.monitor.set_link
        dom.monitor.device_del = real_del  # type: ignore[method-assign]
    # QEMU still has the device: qctl keeps it, and everything it holds, as uncertain.
    entry = dom.ledger.get("ua-f0")
    assert entry is not None and entry.state == "uncertain"
    assert "ua-f0" in await dom.monitor.peripherals()
    assert entry.tap in await _links(netlink)
    # When QEMU does remove it, its event finishes the books.
    await real_del("ua-f0")
    await _removed_late(dom, "ua-f0")
    await _assert_nothing_leaked(dom, netlink, before)
