"""A failover pair whose primary is a real ``type='hostdev'`` VF live-migrates between two
hosts: fake QEMU, fake sysfs and a fake PF on each.

Host A runs the source: a virtio standby and, as its transient half, a VF bound to
vfio-pci with the guest's MAC and a VLAN set through the PF. Host B is another state root
with its own fake sysfs tree, PF netlink and hostdev pool; ``Domain.incoming`` starts it
from the source's :meth:`~qctl.Domain.migratable_xml`. The two fake QEMUs migrate over a
real ``unix:`` stream (:mod:`fakeqemu`), with UNPLUG_PRIMARY and ``wait-unplug`` on A.

The primary is either drawn from a hostdev pool (``type='network'``; the VF travels as the
pool's name, so B takes a VF of its own pool on its own PF) or named by its PCI address
(the same address on B's identical hardware). What is checked: after the migration, A's
VF has its MAC, VLAN and driver back, its pool entry is returned and A's state root is
empty; B holds a VF of its own, bound to vfio-pci with the guest's MAC, in its books. A
refusal or failure at any step on either side leaves the source as it was and nothing on
B.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from fakeqemu import FakeLauncher, FakeQEMU
from host.fakesysfs import FakeSysfs, FakeVFNetlink
from support import recorded_caps, unique, when_listening

from qctl import (
    Domain,
    HostError,
    HostPaths,
    InterfaceType,
    JobAbortedError,
    MACAddress,
    MigrationError,
    NetworkStore,
    PCIAddress,
    ResourceBusyError,
    RunState,
    StateRoot,
    format_xml,
    parse_domain,
    parse_network,
)
from qctl.conf import InterfaceDef
from qctl.host import VFConfig
from qctl.qemu.claims import devices_held
from qctl.qemu.ledger import LedgerEntry
from qctl.qemu.status import read_status

CAPS = recorded_caps()
MAC = "52:54:00:70:00:05"
POOL = "sriov"
TIMEOUT = 10.0


@dataclass(frozen=True)
class HostSpec:
    """One host's SR-IOV hardware: its PF, the settings its VFs start with, its pool's VLAN."""

    pf: str
    pf_address: PCIAddress
    original: VFConfig
    pool_vlan: int


SOURCE = HostSpec(
    "fakepf0",
    PCIAddress.parse("0000:3b:00.0"),
    VFConfig(MACAddress.parse("02:aa:00:00:00:01"), 42),
    7,
)
#: the destination with a pool: another PF at another address, other settings, another VLAN
DESTINATION = HostSpec(
    "fakepf1",
    PCIAddress.parse("0000:5e:00.0"),
    VFConfig(MACAddress.parse("02:bb:00:00:00:01"), 43),
    9,
)
#: the destination of a VF named by address: identical hardware (the same PCI address)
DESTINATION_SAME_SLOT = dataclasses.replace(DESTINATION, pf_address=SOURCE.pf_address)
#: the VLAN a primary named by address asks for itself (it travels with it)
OWN_VLAN = 5


@dataclass
class Host:
    """A host: fake sysfs with one PF and two VFs, fake PF netlink, a state root with the
    hostdev pool ``sriov`` on that PF, and a launcher of fake QEMUs."""

    spec: HostSpec
    sysfs: FakeSysfs
    netlink: FakeVFNetlink
    root: StateRoot
    launcher: FakeLauncher
    vfs: list[PCIAddress]

    @classmethod
    def make(cls, base: Path, spec: HostSpec) -> Host:
        base.mkdir()
        sysfs = FakeSysfs(base)
        sysfs.add_driver("vfio-pci")
        vfs = sysfs.add_pf(spec.pf, spec.pf_address, vfs=2)
        netlink = FakeVFNetlink()
        netlink.add_pf(spec.pf, vfs=2, mac=spec.original.mac, vlan=spec.original.vlan)
        host = cls(spec, sysfs, netlink, StateRoot(base / "state"), FakeLauncher(), vfs)
        host.networks.define(
            parse_network(
                f"<network><name>{POOL}</name><forward mode='hostdev' managed='yes'>"
                f"<pf dev='{spec.pf}'/></forward><vlan><tag id='{spec.pool_vlan}'/></vlan>"
                "</network>"
            )
        )
        return host

    @property
    def networks(self) -> NetworkStore:
        return NetworkStore.for_host(self.root, self.sysfs.sysfs)

    @property
    def qemu(self) -> FakeQEMU:
        """The last fake QEMU started on this host."""
        return self.launcher.qemu

    @property
    def paths(self) -> HostPaths:
        return HostPaths(sysfs=self.sysfs.sysfs, vfio_dir=str(self.root.path.parent / "vfio"))

    async def start(self, xml: str) -> Domain:
        """Start a domain on this host."""
        return await Domain.start(
            parse_domain(xml),
            caps=CAPS,
            state_root=self.root,
            netlink=self.netlink,
            host_paths=self.paths,
            launcher=self.launcher,
        )

    async def incoming(self, xml: str, uri: str, ready: Callable[[], None]) -> Domain:
        """Receive a migration on this host (``ready`` is called once QEMU listens)."""
        return await Domain.incoming(
            parse_domain(xml, live=True),
            uri,
            caps=CAPS,
            state_root=self.root,
            netlink=self.netlink,
            host_paths=self.paths,
            launcher=self.launcher,
            timeout=TIMEOUT,
            ready=ready,
        )

    def vf_index(self, vf: PCIAddress) -> int:
        return self.vfs.index(vf)

    def assert_vf_free(self, vf: PCIAddress) -> None:
        """``vf`` has the settings and the driver it started with."""
        assert self.netlink.config(self.spec.pf, self.vf_index(vf)) == self.spec.original
        assert self.sysfs.driver_of(vf) == "ixgbevf"
        assert self.sysfs.override_of(vf) is None

    def assert_vf_held(self, vf: PCIAddress, vlan: int) -> None:
        """``vf`` is on vfio-pci with the guest's MAC and ``vlan``."""
        assert self.netlink.config(self.spec.pf, self.vf_index(vf)) == VFConfig(
            MACAddress.parse(MAC), vlan
        )
        assert self.sysfs.driver_of(vf) == "vfio-pci"

    def assert_nothing_held(self) -> None:
        """No domain, claim, pool allocation or VF change left on this host."""
        for vf in self.vfs:
            self.assert_vf_free(vf)
        assert self.networks.allocations() == []
        assert Domain.list(self.root) == []
        assert devices_held(self.root) == {}


def domain_xml(name: str, devices: str) -> str:
    ports = "".join(
        f"<controller type='pci' index='{i}' model='pcie-root-port'/>" for i in range(1, 4)
    )
    return (
        f"<domain type='qemu'><name>{name}</name><memory unit='MiB'>64</memory>"
        f"<os><type arch='x86_64' machine='q35'>hvm</type></os><devices>{ports}{devices}"
        "</devices></domain>"
    )


def pair_xml(name: str, primary: str) -> str:
    """A domain with the failover pair: a virtio standby (user networking: no tap, so no
    netlink but the PF's) and ``primary`` as its transient half."""
    standby = (
        f"<interface type='user'><mac address='{MAC}'/><model type='virtio'/>"
        "<teaming type='persistent'/><alias name='ua-standby'/></interface>"
    )
    return domain_xml(name, standby + primary)


TRANSIENT = "<teaming type='transient' persistent='ua-standby'/><alias name='ua-primary'/>"


def pooled_primary() -> str:
    return (
        f"<interface type='network'><mac address='{MAC}'/><source network='{POOL}'/>"
        f"{TRANSIENT}</interface>"
    )


def addressed_primary(vf: PCIAddress) -> str:
    return (
        f"<interface type='hostdev' managed='yes'><mac address='{MAC}'/><source>"
        f"<address type='pci' domain='0x{vf.domain:04x}' bus='0x{vf.bus:02x}' "
        f"slot='0x{vf.slot:02x}' function='0x{vf.function:x}'/></source>"
        f"<vlan><tag id='{OWN_VLAN}'/></vlan>{TRANSIENT}</interface>"
    )


@dataclass
class Rig:
    """Both hosts, the source domain running on A, and where B listens."""

    kind: str
    a: Host
    b: Host
    src: Domain
    uri: str
    arrived: list[Domain] = dataclasses.field(default_factory=list)

    @property
    def pooled(self) -> bool:
        """Whether the primary came from the pool (at start, or hot-plugged after)."""
        return self.kind in ("pool", "hot-plugged")

    @property
    def source_vf(self) -> PCIAddress:
        return self.a.vfs[0]

    @property
    def source_vlan(self) -> int:
        return self.a.spec.pool_vlan if self.pooled else OWN_VLAN

    @property
    def destination_vlan(self) -> int:
        """The VLAN B must set: its own pool's, or the one the interface asks for."""
        return self.b.spec.pool_vlan if self.pooled else OWN_VLAN

    def books(self) -> tuple[list[LedgerEntry], str]:
        """The source's books as its status file has them: the ledger and the live XML."""
        status = read_status(self.src.directory)
        return sorted(status.ledger, key=lambda e: e.alias), format_xml(status.live)

    async def arrive(self, ready: Callable[[], None]) -> Domain:
        """``Domain.incoming`` on B from the definition that travels."""
        dst = await self.b.incoming(self.src.migratable_xml(), self.uri, ready)
        self.arrived.append(dst)
        return dst

    def assert_source_as_before(self, books: tuple[list[LedgerEntry], str]) -> None:
        """The source runs on with its VF, its pool entry and its books unchanged."""
        assert self.src.running and self.src.state is RunState.RUNNING
        assert self.src.job is None
        assert self.books() == books
        self.a.assert_vf_held(self.source_vf, self.source_vlan)
        assert "ua-primary" in self.a.qemu.peripherals
        held = [(x.network, x.device, x.alias) for x in self.a.networks.allocations()]
        assert held == ([(POOL, str(self.source_vf), "ua-primary")] if self.pooled else [])
        assert devices_held(self.a.root) == {self.source_vf: f"{self.src.name}/ua-primary"}


@pytest.fixture(params=["pool", "address", "hot-plugged"])
async def rig(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Rig]:
    """The pair on A: its primary from the pool, at a VF's address, or from the pool but
    hot-plugged after the start (its pool's VLAN must then stay home too)."""
    kind: str = request.param
    a = Host.make(tmp_path / "a", SOURCE)
    b = Host.make(tmp_path / "b", DESTINATION_SAME_SLOT if kind == "address" else DESTINATION)
    primary = addressed_primary(a.vfs[0]) if kind == "address" else pooled_primary()
    src = await a.start(pair_xml(unique("mig"), "" if kind == "hot-plugged" else primary))
    if kind == "hot-plugged":
        await src.attach_device(primary)
    rig = Rig(kind, a, b, src, f"unix:{tmp_path / 'migration.sock'}")
    try:
        yield rig
    finally:
        for dom in (src, *rig.arrived):
            await dom.stop(force=True)
            await dom.aclose()


async def migrate(rig: Rig) -> Domain:
    """Start B listening, migrate A there, and return B's domain."""
    async with asyncio.timeout(TIMEOUT):
        arriving = await when_listening(rig.arrive)
        outcome = await rig.src.migrate(rig.uri)
        dst = await arriving
    assert outcome.unplugged == ("ua-primary",)
    return dst


def the_primary(dom: Domain) -> InterfaceDef:
    (iface,) = [i for i in dom.live.interfaces if i.type is InterfaceType.HOSTDEV]
    return iface


# -- success ----------------------------------------------------------------------------------


async def test_the_source_gives_its_vf_back_and_the_destination_takes_its_own(rig: Rig) -> None:
    a, b, src = rig.a, rig.b, rig.src
    source = the_primary(src).source
    assert source is not None and source.pci == rig.source_vf
    a.assert_vf_held(rig.source_vf, rig.source_vlan)
    assert "ua-primary" in a.qemu.peripherals  # the guest negotiated: QEMU plugged it

    dst = await migrate(rig)

    # The source: quit, every host change undone, nothing left in its state root.
    assert not src.running and a.qemu.exited.is_set()
    assert src.state is RunState.SHUTOFF
    a.assert_nothing_held()
    assert not src.directory.path.exists()
    assert [c for c, _ in a.qemu.log if c.startswith("migrate")] == [
        "migrate-set-capabilities",
        "migrate",
    ]

    # The destination: a VF of its own host, set up as the guest needs, in its books.
    vf = b.vfs[0]
    if rig.pooled:  # a VF of B's own PF, elsewhere on the bus
        assert vf.bus == DESTINATION.pf_address.bus != rig.source_vf.bus
    assert dst.running and dst.state is RunState.RUNNING
    primary = the_primary(dst)
    assert primary.source is not None and primary.source.pci == vf
    assert primary.teaming is not None and primary.teaming.persistent == "ua-standby"
    b.assert_vf_held(vf, rig.destination_vlan)
    entry = dst.ledger.get("ua-primary")
    assert entry is not None and entry.host_device == str(vf)
    assert entry.saved_vf is not None
    assert (entry.saved_vf.pf, entry.saved_vf.mac, entry.saved_vf.vlan) == (
        b.spec.pf,
        str(b.spec.original.mac),
        b.spec.original.vlan,
    )
    assert entry.original_driver == "ixgbevf"
    held = [(x.network, x.device, x.domain, x.alias) for x in b.networks.allocations()]
    if rig.pooled:
        assert entry.pool == (POOL, str(vf))
        assert held == [(POOL, str(vf), dst.name, "ua-primary")]
    else:
        assert entry.pool is None and held == []
    assert devices_held(b.root) == {vf: f"{dst.name}/ua-primary"}
    books = read_status(dst.directory)
    assert {e.alias for e in books.ledger} == {"ua-standby", "ua-primary"}
    assert [(i.alias, i.type) for i in books.live.interfaces] == [
        ("ua-standby", InterfaceType.USER),
        ("ua-primary", InterfaceType.HOSTDEV),
    ]
    assert [d.name for d in Domain.list(b.root)] == [dst.name]
    assert [(c, a) for c, a in b.qemu.log if c in ("migrate-incoming", "cont")] == [
        ("migrate-incoming", {"uri": rig.uri}),
        ("cont", {}),
    ]
    assert b.qemu.status == "running" and "ua-primary" in b.qemu.peripherals  # negotiated

    # And B gives it back like any VF when the domain stops.
    await dst.stop(force=True)
    b.assert_nothing_held()


# -- the destination refuses: B leaves nothing, A migrates nowhere and runs on -----------------


def squatter_xml(rig: Rig) -> str:
    """A domain on B that holds what the arriving guest would take: every VF of B's pool,
    or the VF the primary names."""
    if rig.pooled:
        nics = "".join(
            f"<interface type='network'><mac address='52:54:00:70:01:0{i}'/>"
            f"<source network='{POOL}'/></interface>"
            for i in range(len(rig.b.vfs))
        )
    else:
        nics = addressed_primary(rig.b.vfs[0]).replace(TRANSIENT, "")
    return domain_xml(unique("sq"), nics)


def host_settings(host: Host) -> list[tuple[VFConfig, str | None, str | None]]:
    """Each VF's settings, driver and override on ``host``."""
    pf = host.spec.pf
    return [
        (host.netlink.config(pf, i), host.sysfs.driver_of(vf), host.sysfs.override_of(vf))
        for i, vf in enumerate(host.vfs)
    ]


@pytest.mark.parametrize(
    ("step", "error", "message"),
    [
        ("no free VF", ResourceBusyError, "has no free device left|is in use by"),
        ("PF refuses the MAC", HostError, "injected failure"),
        ("vfio-pci does not take the VF", HostError, "cannot bind .* to vfio-pci"),
        ("QEMU refuses the capabilities", MigrationError, "cannot listen .*: no events"),
        ("QEMU refuses to listen", MigrationError, "Failed to bind socket"),
    ],
)
async def test_a_destination_refusal_leaves_nothing_there(
    rig: Rig, step: str, error: type[Exception], message: str
) -> None:
    b = rig.b
    books = rig.books()
    squatter: Domain | None = None
    if step == "no free VF":
        squatter = await b.start(squatter_xml(rig))
    elif step == "PF refuses the MAC":
        b.netlink.fail(lambda call: call.op == "set" and call.mac == MAC)
    elif step == "vfio-pci does not take the VF":
        for vf in b.vfs:
            b.sysfs.kernel.refuse_probe(vf, "vfio-pci")
    elif step == "QEMU refuses the capabilities":
        b.launcher.on_spawn = lambda qemu: qemu.fail("migrate-set-capabilities", "no events")
    else:
        b.launcher.on_spawn = lambda qemu: qemu.fail("migrate-incoming", "Failed to bind socket")
    before = host_settings(b)
    calls, writes = len(b.netlink.calls), len(b.sysfs.kernel.writes)

    listening = asyncio.Event()
    with pytest.raises(error, match=message):
        async with asyncio.timeout(TIMEOUT):
            await rig.arrive(listening.set)
    assert not listening.is_set()
    assert host_settings(b) == before
    # B's VF was really set up before each refusal after the allocation, and put back.
    mac_set = any(c.op == "set" and c.mac == MAC for c in b.netlink.calls[calls:])
    assert mac_set == (step != "no free VF")
    override = (f"{b.vfs[0]}/driver_override", "vfio-pci") in b.sysfs.kernel.writes[writes:]
    assert override == (step not in ("no free VF", "PF refuses the MAC"))

    # Nobody listens: the source's migration fails to connect, and it runs on.
    with pytest.raises(MigrationError, match="Failed to connect"):
        await rig.src.migrate(rig.uri)
    rig.assert_source_as_before(books)
    if squatter is not None:
        assert [d.name for d in Domain.list(b.root)] == [squatter.name]
        await squatter.stop(force=True)
    b.assert_nothing_held()


# -- the migration fails on the source: A keeps its VF, B leaves nothing ----------------------

#: (what goes wrong, the source's status then, what the source's caller is told)
SOURCE_FAILURES = [
    ("capabilities refused", "setup", "cannot set up the migration: .*no events"),
    ("migrate refused", "setup", "QEMU refused to migrate to unix:.*: There's a migration"),
    ("failed", "wait-unplug", "migration failed on the transfer side: Unable to write"),
    ("failed", "active", "migration failed on the transfer side: Unable to write"),
    ("destination died", "active", "migration failed .*: Unable to write to socket"),
    ("cancelled", "wait-unplug", None),
    ("aborted", "wait-unplug", "aborted"),
    ("timed out", "wait-unplug", "did not complete within 0.5s; cancelled"),
]


@pytest.mark.parametrize(("failure", "status", "message"), SOURCE_FAILURES)
async def test_a_failed_migration_keeps_the_source_and_leaves_nothing_on_the_destination(
    rig: Rig, failure: str, status: str, message: str | None
) -> None:
    a, b, src = rig.a, rig.b, rig.src
    books = rig.books()
    qemu = a.qemu
    if failure == "capabilities refused":
        qemu.fail("migrate-set-capabilities", "no events")
    elif failure == "migrate refused":
        qemu.fail("migrate", "There's a migration process in progress")
    else:
        release = qemu.hold_migration(status)

    async with asyncio.timeout(TIMEOUT):
        arriving = await when_listening(rig.arrive)
    b.assert_vf_held(b.vfs[0], rig.destination_vlan)  # B is ready, with its VF
    timeout = 0.5 if failure == "timed out" else None
    migrating = asyncio.ensure_future(src.migrate(rig.uri, timeout=timeout))
    if status != "setup":
        async with asyncio.timeout(TIMEOUT):
            await qemu.migration_held[status].wait()
        if failure == "failed":
            qemu.fail_migration("Unable to write to socket: Connection reset by peer")
        elif failure == "destination died":
            b.qemu.exit()
            with pytest.raises(MigrationError, match="lost the incoming QEMU"):
                await arriving  # B noticed and cleaned up: now A sends into the void
            release.set()
        elif failure == "cancelled":
            migrating.cancel()
        elif failure == "aborted":
            await src.abort_job()

    expected: type[BaseException] = {
        "cancelled": asyncio.CancelledError,
        "aborted": JobAbortedError,
    }.get(failure, MigrationError)
    with pytest.raises(expected, match=message):
        async with asyncio.timeout(TIMEOUT):
            await migrating
    assert ("migrate_cancel" in [c for c, _ in qemu.log]) == (
        failure in ("cancelled", "aborted", "timed out")
    )
    # B: a broken stream ends its QEMU; with none ever sent, its caller gives up waiting.
    if status == "setup":
        arriving.cancel()
    ended: type[BaseException] = asyncio.CancelledError if status == "setup" else MigrationError
    with pytest.raises(ended):
        async with asyncio.timeout(TIMEOUT):
            await arriving
    rig.assert_source_as_before(books)
    b.assert_nothing_held()

    # The source is as good as new: the next migration goes through.
    dst = await migrate(rig)
    a.assert_nothing_held()
    b.assert_vf_held(b.vfs[0], rig.destination_vlan)
    assert dst.running
