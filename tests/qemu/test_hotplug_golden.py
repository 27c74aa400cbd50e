"""Hot-plug's QMP conversations, golden, against an in-process fake QEMU (no guest, fast).

In the style of libvirt's qemuhotplugtest: for each kind of device (user, ethernet, bridge,
network pool, hostdev interface, hostdev) the exact commands of its attach and of its
detach, and of the rollback after a failure at each step, are compared with files under
``data/hotplug``; cancellation before and after each command is sent is checked too. After
every failure: the ledger is empty, the fake QEMU holds no netdev, device or fd of it, the
tap is gone and the VF is as it was.

Regenerate after an intended change with
``QCTL_REGEN_GOLDEN=1 pytest tests/qemu/test_hotplug_golden.py``.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from fakeqemu import FakeLauncher, FakeQEMU
from host.fakesysfs import FakeSysfs, FakeVFNetlink
from support import unique

from qctl import (
    DetachResult,
    Domain,
    HostPaths,
    HotplugError,
    MACAddress,
    PCIAddress,
    QEMUCaps,
    parse_domain,
    parse_network,
)
from qctl.host import Netlink, VFConfig

DATA = Path(__file__).parent / "data"
GOLDEN = DATA / "hotplug"
CAPS = QEMUCaps.from_json((DATA / "argv" / "qemu-7.2.caps.json").read_text())
REGEN = bool(os.environ.get("QCTL_REGEN_GOLDEN"))
PF = "fakepf0"
PF_ADDRESS = PCIAddress.parse("0000:3b:00.0")
ORIGINAL = VFConfig(MACAddress.parse("02:aa:bb:cc:dd:01"), 42)
VF = "<address type='pci' domain='0x0000' bus='0x3b' slot='0x10' function='0x1'/>"

DOMAIN = """<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>64</memory>
  <os><type arch='x86_64' machine='q35'>hvm</type></os>
  <devices>
    <controller type='pci' index='1' model='pcie-root-port'/>
    <controller type='pci' index='2' model='pcie-root-port'/>
  </devices>
</domain>"""


@dataclass(frozen=True)
class Kind:
    xml: str
    steps: tuple[str, ...]
    tap: str | None = None
    vf: bool = False
    alias: str = "net0"


KINDS = {
    "user": Kind(
        "<interface type='user'><mac address='52:54:00:aa:00:01'/>"
        "<model type='virtio'/></interface>",
        ("netdev_add", "device_add"),
    ),
    "ethernet": Kind(
        "<interface type='ethernet'><mac address='52:54:00:aa:00:02'/>"
        "<target dev='qgold-eth'/><model type='virtio'/><link state='down'/></interface>",
        ("getfd", "netdev_add", "device_add", "set_link"),
        tap="qgold-eth",
    ),
    "bridge": Kind(
        "<interface type='bridge'><mac address='52:54:00:aa:00:03'/><source bridge='{bridge}'/>"
        "<target dev='qgold-br'/><model type='e1000e'/></interface>",
        ("getfd", "netdev_add", "device_add"),
        tap="qgold-br",
    ),
    "network": Kind(
        "<interface type='network'><mac address='52:54:00:aa:00:04'/>"
        "<source network='goldnet'/><target dev='qgold-net'/><model type='virtio'/></interface>",
        ("getfd", "netdev_add", "device_add"),
        tap="qgold-net",
    ),
    "hostdev-interface": Kind(
        "<interface type='hostdev' managed='yes'><mac address='52:54:00:aa:00:05'/>"
        f"<source>{VF}</source></interface>",
        ("device_add",),
        vf=True,
        alias="hostdev0",
    ),
    "hostdev-pool": Kind(
        "<interface type='network'><mac address='52:54:00:aa:00:06'/>"
        "<source network='vfpool'/></interface>",
        ("device_add",),
        vf=True,
    ),
    "hostdev": Kind(
        f"<hostdev mode='subsystem' type='pci' managed='yes'><source>{VF}</source></hostdev>",
        ("device_add",),
        vf=True,
        alias="hostdev0",
    ),
}


@dataclass
class Rig:
    dom: Domain
    qemu: FakeQEMU
    kind: Kind
    xml: str
    netlink: Netlink | FakeVFNetlink
    sysfs: FakeSysfs | None = None
    marks: list[int] = field(default_factory=list)

    def mark(self) -> None:
        """Start a new part of the conversation."""
        self.marks.append(len(self.qemu.log))

    def since_mark(self) -> list[str]:
        return self.qemu.conversation(since=self.marks[-1] if self.marks else 0)


@pytest.fixture(params=sorted(KINDS))
def kind_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def rig(kind_name: str, tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Rig]:
    kind = KINDS[kind_name]
    state = tmp_path / "state"
    xml = kind.xml
    sysfs: FakeSysfs | None = None
    netlink: Netlink | FakeVFNetlink
    if kind.vf:
        sysfs = FakeSysfs(tmp_path)
        sysfs.add_driver("vfio-pci")
        sysfs.add_pf(PF, PF_ADDRESS, vfs=2)
        netlink = FakeVFNetlink()
        netlink.add_pf(PF, vfs=2, mac=ORIGINAL.mac, vlan=ORIGINAL.vlan)
        paths = HostPaths(sysfs=sysfs.sysfs)
    else:
        paths = HostPaths()
        if kind.tap is not None:
            request.getfixturevalue("tun")
        netlink = Netlink()
    bridge = unique("qgbr")
    if kind.tap is not None:
        assert isinstance(netlink, Netlink)
        await netlink.create_bridge(bridge)
        xml = xml.replace("{bridge}", bridge)
    launcher = FakeLauncher()
    defn = parse_domain(DOMAIN.format(name=unique("gold")))
    dom = await Domain.start(
        defn, caps=CAPS, state_root=state, netlink=netlink, host_paths=paths, launcher=launcher
    )
    if kind_name == "hostdev-pool":
        dom.networks.define(
            parse_network(
                "<network><name>vfpool</name><forward mode='hostdev' managed='yes'>"
                f"<pf dev='{PF}'/></forward></network>"
            )
        )
    if kind_name == "network":
        dom.networks.define(
            parse_network(
                f"<network><name>goldnet</name><forward mode='bridge'/>"
                f"<bridge name='{bridge}'/></network>"
            )
        )
    try:
        yield Rig(dom, launcher.qemu, kind, xml, netlink, sysfs)
    finally:
        await dom.stop(force=True)
        if isinstance(netlink, Netlink):
            if kind.tap is not None:
                await netlink.delete_link(bridge)
            await netlink.aclose()


def check_golden(name: str, lines: list[str]) -> None:
    path = GOLDEN / f"{name}.qmp"
    text = "".join(f"{line}\n" for line in lines)
    if REGEN:
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"{path.name} missing; regenerate with QCTL_REGEN_GOLDEN=1"
    assert text == path.read_text(), f"{path.name} differs"


async def assert_nothing_left(rig: Rig, before: tuple[set[str], set[str], set[str]]) -> None:
    """The failed attach left nothing: books, QEMU, tap, VF, pool."""
    assert len(rig.dom.ledger) == 0
    assert rig.dom.ledger.pending() == []
    qemu = rig.qemu
    assert (qemu.peripherals, qemu.netdevs, qemu.fds) == before
    if rig.kind.tap is not None:
        assert isinstance(rig.netlink, Netlink)
        assert await rig.netlink.get_link(rig.kind.tap) is None
    if rig.kind.vf:
        assert isinstance(rig.netlink, FakeVFNetlink) and rig.sysfs is not None
        for index in (0, 1):
            assert rig.netlink.config(PF, index) == ORIGINAL
            assert rig.sysfs.override_of(PCIAddress.parse(f"0000:3b:10.{index}")) is None
    assert rig.dom.networks.allocations() == []
    assert "attaching" not in json.dumps(rig.dom.directory.read_status())


def snapshot(qemu: FakeQEMU) -> tuple[set[str], set[str], set[str]]:
    return (set(qemu.peripherals), set(qemu.netdevs), set(qemu.fds))


async def test_attach_and_detach(rig: Rig, kind_name: str) -> None:
    before = snapshot(rig.qemu)
    rig.mark()
    live = await rig.dom.attach_device(rig.xml)
    check_golden(f"{kind_name}.attach", rig.since_mark())
    assert live.alias is not None and rig.dom.ledger.get(live.alias) is not None
    assert rig.dom.ledger.get(live.alias).state == "attached"  # type: ignore[union-attr]
    rig.mark()
    assert await rig.dom.detach_device(live.alias) is DetachResult.DETACHED
    check_golden(f"{kind_name}.detach", rig.since_mark())
    await assert_nothing_left(rig, before)


STEPS = [(kind, step) for kind in sorted(KINDS) for step in KINDS[kind].steps]


@pytest.mark.parametrize(("kind_name", "step"), STEPS)
async def test_failure_at_each_step_is_rolled_back(rig: Rig, kind_name: str, step: str) -> None:
    before = snapshot(rig.qemu)
    rig.qemu.fail(step, f"fake failure of {step}")
    rig.mark()
    with pytest.raises(HotplugError, match=f"failed at {step}") as caught:
        await rig.dom.attach_device(rig.xml)
    assert caught.value.stage == step
    check_golden(f"{kind_name}.fail-{step}", rig.since_mark())
    await assert_nothing_left(rig, before)


@pytest.mark.parametrize("sent", [False, True], ids=["before-sent", "after-sent"])
@pytest.mark.parametrize(("kind_name", "step"), STEPS)
async def test_cancellation_at_each_step_is_rolled_back(
    rig: Rig, kind_name: str, step: str, sent: bool
) -> None:
    before = snapshot(rig.qemu)
    release = rig.qemu.stall(step, effect=sent)
    attach = asyncio.create_task(rig.dom.attach_device(rig.xml))
    async with asyncio.timeout(5):
        await rig.qemu.stalled[step].wait()
    attach.cancel()
    with pytest.raises(asyncio.CancelledError):
        await attach
    if sent:
        release.set()
    await asyncio.sleep(0.05)
    await assert_nothing_left(rig, before)


async def test_a_refusal_never_undoes_what_another_created(rig: Rig, kind_name: str) -> None:
    # QEMU already has a device (or netdev) of the id the attach will use, left by
    # someone else: its refusal ("Duplicate ID") means this attach created nothing, and
    # the rollback must not delete the other one.
    if "netdev_add" in rig.kind.steps:
        rig.qemu.netdevs.add("hostnet0")
        command = "netdev_add"
    else:
        rig.qemu.peripherals.add(rig.kind.alias)
        command = "device_add"
    before = snapshot(rig.qemu)
    with pytest.raises(HotplugError, match=f"failed at {command}.*Duplicate"):
        await rig.dom.attach_device(rig.xml)
    await assert_nothing_left(rig, before)
