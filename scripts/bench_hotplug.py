"""Benchmark of NIC hot-plug: ``scripts/bench hotplug [--cycles N] [--no-libvirt] [--profile F]``.

One run measures the attach and detach latency of a virtio NIC whose tap joins a Linux
bridge, on the bundled test guest (TCG, q35, four empty pcie-root-ports), for:

- qctl: ``await dom.attach_device(iface)`` with the ``InterfaceDef`` parsed beforehand (the
  comparison is about the hot-plug path, not XML parsing), and ``await
  dom.detach_device(alias)``, which returns DETACHED once QEMU sent DEVICE_DELETED and the
  netdev, the tap and the ledger entry are gone;
- hand-written: the minimal qemu.qmp + pyroute2 script doing the same steps on the same
  guest. Attach: open /dev/net/tun, ``TUNSETIFF`` (IFF_TAP|IFF_NO_PI|IFF_VNET_HDR, the kernel
  picks ``vnetN``), one netlink request setting the tap's MAC (``fe`` + the guest MAC's last
  five bytes), its master (the bridge) and ``up``; ``send_fd_scm`` + ``getfd``,
  ``netdev_add`` (tap, fd=name), ``device_add`` (virtio-net-pci, netdev, id, mac,
  bus=pci.4, addr=0x0), close its fd. Detach: ``device_del``, wait for the DEVICE_DELETED
  naming the device, ``netdev_del``, delete the tap if it outlived QEMU's fd (it never does);
- libvirt, when installed and its daemon can be started privately: the same guest as a
  transient libvirt domain with the same ``<interface type='bridge'>``, through the Python
  binding (run by /usr/bin/python3, timed inside that process) and through ``virsh
  attach-device/detach-device --live`` (wall time, so including virsh's start-up).

Everything happens in a private network namespace (the script re-executes itself under
``unshare --net``), so the bridge and the taps never touch the host. The libvirtd is our
own, started inside that namespace too, so libvirt's taps join the same bridge; it is
stopped at the end. The qctl state root is a temporary directory on tmpfs (/run is a tmpfs
on a normal host; the status file is fsynced at each ledger write).

Order: qctl and the hand-written script alternate cycle by cycle in ABBA order (q h, h q,
…) to spread noise and order effects, after two untimed warm-up cycles each. Both stay
connected: qctl's handle keeps the domain's first QMP monitor, the hand-written client uses
the last one (qctl gives each domain three). After each attach, untimed, the script waits
until the guest reports the NIC's MAC on its serial console and (qctl, hand-written) QEMU
reports NIC_RX_FILTER_CHANGED for it, i.e. the guest has the NIC up; after each detach, until
the guest no longer reports it. So every operation starts from a settled guest, and the
counts printed prove the guest took part. A random pause (up to the guest's 0.2 s report
period) before each timed operation keeps either tool from meeting the guest's busy moments
more often than the other.

Prints a table (median and p90 per tool) and the ratios qctl/hand-written of the medians;
exits 1 when either exceeds 1.25, or attach exceeds 1.1 (the target of the issue on many
domains in one process). ``--profile FILE`` runs qctl's timed calls under cProfile
(which inflates qctl's numbers, so the targets are not judged), saves the stats to FILE and
prints the top entries.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import fcntl
import json
import os
import pstats
import random
import re
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pyroute2 import AsyncIPRoute
from qemu.qmp import EventListener, Message, QMPClient

import qctl
from qctl.caps import CapsCache, resolve_binary
from qctl.host import Netlink

REPO = Path(__file__).resolve().parents[1]
GUEST = REPO / ".cache" / "guest"
BRIDGE = "qbench0"
DOMAIN = "qctl-bench-hotplug"
LIBVIRT_DOMAIN = "qctl-bench-hotplug-lv"
LIBVIRT_URI = "qemu:///system"
LIBVIRTD = "/usr/sbin/libvirtd"
SYSTEM_PYTHON = "/usr/bin/python3"
SPARE_PORTS = 4
# qctl puts its NIC on the first free root port; the hand-written script uses the last one.
HAND_BUS = f"pci.{SPARE_PORTS}"
MAX_RATIO = 1.25
#: attach's own, tighter target: ``scripts/bench hotplug in-process attach <= 1.1x``
MAX_RATIOS = {"attach": 1.1, "detach": MAX_RATIO}
WARMUP = 2
NETNS_MARK = "QCTL_BENCH_NETNS"
BOOT_TIMEOUT = 120.0
SEEN_TIMEOUT = 30.0
DETACH_TIMEOUT = 10.0
RX_FILTER_TIMEOUT = 5.0

# <linux/if_tun.h>
TUNSETIFF = 0x400454CA
IFF_TAP, IFF_NO_PI, IFF_VNET_HDR = 0x0002, 0x1000, 0x4000
#: a whole report line: the guest may be halfway through writing the last one
NICS_RE = re.compile(r"^QCTL-NICS:([^\n]*)\n", re.MULTILINE)
#: the guest's NIC report loop wakes every 0.2 s, and under TCG its vCPU holds QEMU's big
#: lock while it runs, slowing QMP commands that arrive then; every timed operation starts
#: after a random pause up to this long, so each tool meets the loop at random phases
#: (settling on the guest's report would otherwise lock a tool onto one phase per run)
GUEST_PERIOD = 0.2


def say(text: str) -> None:
    """Progress, on stderr (the results go to stdout)."""
    print(f"bench hotplug: {text}", file=sys.stderr, flush=True)


def run(argv: list[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=check)


# -- where it runs ---------------------------------------------------------------------------


def in_private_netns() -> bool:
    """Whether this runs in the namespace :func:`reexec_in_private_netns` made, or in any
    namespace that is not pid 1's (when pid 1's can be seen: sandboxes may hide it)."""
    ours = os.stat("/proc/self/ns/net").st_ino
    if os.environ.get(NETNS_MARK) == str(ours):
        return True
    try:
        return ours != os.stat("/proc/1/ns/net").st_ino
    except OSError:
        return False


def reexec_in_private_netns() -> None:
    """Run this script again in a new network namespace whose loopback is up."""
    setup = (
        f'ip link set lo up && export {NETNS_MARK}=$(stat -L -c %i /proc/self/ns/net) && exec "$@"'
    )
    os.execvp(
        "unshare",
        ["unshare", "--net", "--", "sh", "-c", setup, "sh",
         sys.executable, os.path.abspath(__file__), *sys.argv[1:]],
    )  # fmt: skip


def tmpfs_dir() -> Path:
    """/run when it is a tmpfs (as on a normal host), else /dev/shm."""
    with open("/proc/self/mounts") as table:
        mounts = {fields[1]: fields[2] for fields in map(str.split, table)}
    return Path("/run") if mounts.get("/run") == "tmpfs" else Path("/dev/shm")


def guest_kernel() -> Path:
    return GUEST / "vmlinux" if (GUEST / "vmlinux").is_file() else GUEST / "vmlinuz"


def domain_xml(console: Path) -> str:
    ports = "\n".join(
        f"    <controller type='pci' index='{i}' model='pcie-root-port'/>"
        for i in range(1, SPARE_PORTS + 1)
    )
    return f"""<domain type='qemu'>
  <name>{DOMAIN}</name>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
    <kernel>{guest_kernel()}</kernel>
    <initrd>{GUEST / "initrd.img"}</initrd>
    <cmdline>console=ttyS0 quiet panic=-1</cmdline>
  </os>
  <devices>
    <controller type='pci' index='0' model='pcie-root'/>
{ports}
    <serial type='file'><source path='{console}'/></serial>
  </devices>
</domain>
"""


def interface_xml(mac: str) -> str:
    return (
        f"<interface type='bridge'><mac address='{mac}'/><source bridge='{BRIDGE}'/>"
        "<model type='virtio'/></interface>"
    )


def mac_for(tool: int, cycle: int) -> str:
    """A distinct guest MAC per tool and cycle, so each report names one device."""
    return f"52:54:00:b{tool}:{cycle // 256:02x}:{cycle % 256:02x}"


# -- measuring -----------------------------------------------------------------------------


@dataclass
class Samples:
    """One tool's timings (seconds) and how many of its NICs the guest reported."""

    title: str
    attach: list[float] = field(default_factory=list)
    detach: list[float] = field(default_factory=list)
    seen: int = 0

    def values(self, which: str) -> list[float]:
        return self.attach if which == "attach" else self.detach

    def median(self, which: str) -> float:
        return statistics.median(self.values(which))

    def p90(self, which: str) -> float:
        values = self.values(which)
        if len(values) < 2:
            return values[0]
        return statistics.quantiles(values, n=10, method="inclusive")[8]


class Console:
    """The guest's serial log: its ``QCTL-NICS:`` reports of the NICs it sees."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def macs(self) -> set[str] | None:
        """The MACs of the last whole report (``name,index,mac`` entries), or None before one.

        Only lines the guest has finished are read, and an entry that is not whole (kernel
        messages can land in the middle of a line on the serial port) is skipped.
        """
        try:
            reports = NICS_RE.findall(self.path.read_text(errors="replace"))
        except FileNotFoundError:
            return None
        if not reports:
            return None
        fields = (entry.split(",") for entry in reports[-1].split())
        return {parts[2] for parts in fields if len(parts) >= 3}

    async def wait(self, predicate: Callable[[set[str]], bool], what: str, limit: float) -> None:
        try:
            async with asyncio.timeout(limit):
                while True:
                    macs = self.macs()
                    if macs is not None and predicate(macs):
                        return
                    await asyncio.sleep(0.02)
        except TimeoutError:
            raise RuntimeError(f"the guest never reported {what} (see {self.path})") from None

    async def booted(self) -> None:
        await self.wait(lambda macs: True, "its NICs after boot", BOOT_TIMEOUT)

    async def seen(self, mac: str) -> None:
        await self.wait(lambda macs: mac in macs, f"NIC {mac}", SEEN_TIMEOUT)

    async def gone(self, mac: str) -> None:
        await self.wait(lambda macs: mac not in macs, f"the removal of NIC {mac}", SEEN_TIMEOUT)


class Tool(Protocol):
    """One way of hot-plugging; ``attach`` returns its time and what ``detach`` needs."""

    samples: Samples
    number: int  # picks the tool's MACs

    async def attach(self, mac: str) -> tuple[float, str]: ...

    async def settle(self, token: str) -> None: ...

    async def detach(self, token: str) -> float: ...


async def alternate(tools: Sequence[Tool], console: Console, cycles: int, what: str) -> None:
    """Warm-up, then ``cycles`` timed cycles per tool, in ABBA order."""
    jitter = random.Random(cycles)
    for cycle in range(WARMUP + cycles):
        for tool in tools if cycle % 2 == 0 else reversed(tools):
            mac = mac_for(tool.number, cycle)
            await asyncio.sleep(jitter.uniform(0, GUEST_PERIOD))
            attach, token = await tool.attach(mac)
            await console.seen(mac)
            await tool.settle(token)
            await asyncio.sleep(jitter.uniform(0, GUEST_PERIOD))
            detach = await tool.detach(token)
            await console.gone(mac)
            if cycle >= WARMUP:
                tool.samples.attach.append(attach)
                tool.samples.detach.append(detach)
                tool.samples.seen += 1
        done = cycle - WARMUP + 1
        if done > 0 and done % 10 == 0:
            say(f"{what}: {done}/{cycles} cycles")


# -- qctl ----------------------------------------------------------------------------------


class QctlTool:
    """qctl's long-lived handle on the benchmark domain (on its first QMP monitor)."""

    number = 1

    def __init__(self, dom: qctl.Domain, profile: cProfile.Profile | None) -> None:
        self.samples = Samples("qctl")
        self.dom = dom
        self.profile = profile
        self.parsed: dict[str, qctl.InterfaceDef] = {}
        self._events: qctl.EventStream | None = None

    def prepare(self, cycles: int) -> None:
        """Parse every cycle's interface now: XML parsing is not what is compared."""
        for cycle in range(WARMUP + cycles):
            mac = mac_for(self.number, cycle)
            iface = qctl.parse_device(interface_xml(mac))
            assert isinstance(iface, qctl.InterfaceDef)
            self.parsed[mac] = iface

    async def attach(self, mac: str) -> tuple[float, str]:
        iface = self.parsed[mac]
        self._events = self.dom.events()
        with self._profiled():
            start = time.perf_counter()
            live = await self.dom.attach_device(iface)
            elapsed = time.perf_counter() - start
        assert live.alias is not None
        return elapsed, live.alias

    async def settle(self, token: str) -> None:
        """Wait until the guest has set the new NIC's RX filter (it brought the NIC up).

        Besides settling the guest, this keeps that event out of the detach that follows:
        qctl at the time of writing takes a NIC_RX_FILTER_CHANGED for the NIC being
        detached as the guest's answer to the unplug ("rejected by the guest").
        """
        assert self._events is not None
        with self._events as events:
            try:
                async with asyncio.timeout(RX_FILTER_TIMEOUT):
                    async for event in events:
                        if isinstance(event, qctl.NICRxFilterChanged) and event.alias == token:
                            return
            except TimeoutError:
                say(f"qctl: no NIC_RX_FILTER_CHANGED for {token}; detaching anyway")

    async def detach(self, token: str) -> float:
        with self._profiled():
            start = time.perf_counter()
            result = await self.dom.detach_device(token, wait=DETACH_TIMEOUT)
            elapsed = time.perf_counter() - start
        if result is not qctl.DetachResult.DETACHED:
            raise RuntimeError(f"qctl: the detach of {token} is {result}")
        return elapsed

    @contextlib.contextmanager
    def _profiled(self) -> Iterator[None]:
        if self.profile is None:
            yield
            return
        self.profile.enable()
        try:
            yield
        finally:
            self.profile.disable()


# -- the hand-written script ---------------------------------------------------------------


def event_data(event: Message) -> dict[str, Any]:
    data = event["data"]
    return data if isinstance(data, dict) else {}


class HandWritten:
    """The minimal qemu.qmp script: the same QMP steps as qctl, nothing else.

    Its QMP connection (to the domain's last monitor) and its pyroute2 netlink socket stay
    open from one cycle to the next, as in any script doing more than one hot-plug.
    qemu.qmp's default event listener queues every event forever: fine for a benchmark.
    """

    number = 2

    def __init__(self, qmp_socket: Path, bridge_index: int) -> None:
        self.samples = Samples("hand-written")
        self.qmp_socket = qmp_socket
        self.bridge_index = bridge_index
        self.qmp = QMPClient("hand-written")
        self.ipr = AsyncIPRoute()
        self.taps: dict[str, str] = {}
        self._rx_filter: EventListener | None = None

    async def connect(self) -> None:
        await self.qmp.connect(str(self.qmp_socket))

    async def aclose(self) -> None:
        with contextlib.suppress(Exception):
            await self.qmp.disconnect()
        self.ipr.close()

    async def attach(self, mac: str) -> tuple[float, str]:
        device = f"hand{len(self.taps)}"
        self._rx_filter = EventListener("NIC_RX_FILTER_CHANGED")
        self.qmp.register_listener(self._rx_filter)
        start = time.perf_counter()
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
        try:
            ifreq = struct.pack("16sH22x", b"vnet%d", IFF_TAP | IFF_NO_PI | IFF_VNET_HDR)
            tap = fcntl.ioctl(fd, TUNSETIFF, ifreq)[:16].rstrip(b"\0").decode()
            await self.ipr.link(
                "set",
                index=socket.if_nametoindex(tap),
                address="fe" + mac[2:],
                master=self.bridge_index,
                state="up",
            )
            self.qmp.send_fd_scm(fd)
            await self.qmp.execute("getfd", {"fdname": device})
            await self.qmp.execute(
                "netdev_add", {"type": "tap", "id": f"host{device}", "fd": device}
            )
            await self.qmp.execute(
                "device_add",
                {"driver": "virtio-net-pci", "netdev": f"host{device}", "id": device,
                 "mac": mac, "bus": HAND_BUS, "addr": "0x0"},
            )  # fmt: skip
        finally:
            os.close(fd)
        elapsed = time.perf_counter() - start
        self.taps[device] = tap
        return elapsed, device

    async def settle(self, token: str) -> None:
        """Wait until the guest has set the new NIC's RX filter (it brought the NIC up)."""
        listener = self._rx_filter
        assert listener is not None
        try:
            async with asyncio.timeout(RX_FILTER_TIMEOUT):
                async for event in listener:
                    if event_data(event).get("name") == token:
                        return
        except TimeoutError:
            say(f"hand-written: no NIC_RX_FILTER_CHANGED for {token}; detaching anyway")
        finally:
            self.qmp.remove_listener(listener)

    async def detach(self, token: str) -> float:
        tap = self.taps[token]
        start = time.perf_counter()
        with self.qmp.listener("DEVICE_DELETED") as deleted:
            await self.qmp.execute("device_del", {"id": token})
            async with asyncio.timeout(DETACH_TIMEOUT):
                async for event in deleted:
                    if event_data(event).get("device") == token:
                        break
        await self.qmp.execute("netdev_del", {"id": f"host{token}"})
        with contextlib.suppress(OSError):  # QEMU closed the last fd: the tap is gone
            await self.ipr.link("del", index=socket.if_nametoindex(tap))
        return time.perf_counter() - start


async def measure_qemu_side(
    work: Path, cycles: int, binary: str, netlink: Netlink, profile: cProfile.Profile | None
) -> tuple[Samples, Samples]:
    """Boot the guest with qctl, alternate qctl and hand-written cycles on it, stop it."""
    console = Console(work / "serial.log")
    caps = await CapsCache().get(binary)
    defn = qctl.parse_domain(domain_xml(console.path))
    say(f"booting the test guest with qctl (state root {work / 'state'})")
    dom = await qctl.Domain.start(defn, caps=caps, state_root=work / "state", netlink=netlink)
    hand: HandWritten | None = None
    try:
        await console.booted()
        hand = HandWritten(dom.directory.qmp_sockets[-1], socket.if_nametoindex(BRIDGE))
        await hand.connect()
        ours = QctlTool(dom, profile)
        ours.prepare(cycles)
        await alternate([ours, hand], console, cycles, "qctl/hand-written")
    finally:
        if hand is not None:
            await hand.aclose()
        try:
            await dom.stop(force=True)
        finally:
            await dom.aclose()
    return ours.samples, hand.samples


# -- libvirt -------------------------------------------------------------------------------

# Run by /usr/bin/python3 (the venv cannot import the distribution's libvirt binding). Reads
# "attach|detach XMLFILE MAC" lines and answers one JSON line each, timing only the call.
LIBVIRT_HELPER = r"""
import json, sys, time
import libvirt
libvirt.registerErrorHandler(lambda ctx, err: None, None)
conn = libvirt.open(sys.argv[1])
dom = conn.lookupByName(sys.argv[2])
live = libvirt.VIR_DOMAIN_AFFECT_LIVE
print(json.dumps({"version": conn.getLibVersion()}), flush=True)
for line in sys.stdin:
    op, path, mac = line.split()
    with open(path) as f:
        xml = f.read()
    try:
        start = time.perf_counter()
        if op == "attach":
            dom.attachDeviceFlags(xml, live)
        else:
            dom.detachDeviceFlags(xml, live)
        reply = {"elapsed": time.perf_counter() - start}
        if op == "detach":
            reply["pending"] = mac in dom.XMLDesc(0)
    except libvirt.libvirtError as exc:
        reply = {"error": str(exc)}
    print(json.dumps(reply), flush=True)
"""


def libvirt_unavailable() -> str | None:
    """Why libvirt cannot be measured here, or None."""
    if shutil.which("virsh") is None or not os.path.exists(LIBVIRTD):
        return "not installed"
    if os.geteuid() != 0:
        return "skipped: needs root (this bench starts its own libvirtd)"
    conf = Path("/etc/libvirt/qemu.conf")
    settings: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in conf.read_text().splitlines():
            match = re.match(r"^\s*(\w+)\s*=\s*(.*?)\s*$", line)
            if match:
                settings[match[1]] = match[2]
    wanted = {"user": '"root"', "group": '"root"', "stdio_handler": '"file"'}
    if any(settings.get(key) != value for key, value in wanted.items()):
        return f'skipped: {conf} needs user = "root", group = "root", stdio_handler = "file"'
    if (
        Path("/run/libvirt/libvirt-sock").exists()
        or run(["pgrep", "-x", "libvirtd"], check=False).returncode == 0
    ):
        return "skipped: a libvirtd is already running (this bench starts and stops its own)"
    autostart = Path("/etc/libvirt/qemu/networks/autostart")
    if autostart.is_dir() and any(autostart.iterdir()):
        return f"skipped: {autostart} is not empty (libvirtd would start those networks)"
    if run([SYSTEM_PYTHON, "-c", "import libvirt"], check=False).returncode != 0:
        return "skipped: no python3-libvirt for /usr/bin/python3 (apt-get install python3-libvirt)"
    return None


def libvirt_domain_xml(console: Path) -> str:
    """The same guest for libvirt: ACPI on (qctl's default), no devices it would add itself."""
    ports = "\n".join(
        "    <controller type='pci' model='pcie-root-port'/>" for _ in range(SPARE_PORTS)
    )
    return f"""<domain type='qemu'>
  <name>{LIBVIRT_DOMAIN}</name>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
    <kernel>{guest_kernel()}</kernel>
    <initrd>{GUEST / "initrd.img"}</initrd>
    <cmdline>console=ttyS0 quiet panic=-1</cmdline>
  </os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <devices>
    <controller type='pci' index='0' model='pcie-root'/>
{ports}
    <controller type='usb' model='none'/>
    <serial type='file'><source path='{console}'/></serial>
    <memballoon model='none'/>
  </devices>
</domain>
"""


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text())
    except (OSError, ValueError):
        return None


class Libvirt:
    """Our own libvirtd (in this network namespace), a transient domain, the binding helper."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.pidfile = work / "libvirtd.pid"
        self.console = Console(work / "libvirt-serial.log")
        self.helper: asyncio.subprocess.Process | None = None
        self.version = "?"

    def virsh(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run(["virsh", "-q", "-c", LIBVIRT_URI, *args], check=check)

    async def start(self) -> None:
        run([LIBVIRTD, "--daemon", "--pid-file", str(self.pidfile)])
        deadline = time.monotonic() + 30
        while self.virsh("version", check=False).returncode != 0:
            if time.monotonic() > deadline:
                raise RuntimeError("libvirtd did not answer within 30 s")
            await asyncio.sleep(0.2)
        if self.virsh("domstate", LIBVIRT_DOMAIN, check=False).returncode == 0:
            raise RuntimeError(f"libvirt already has a domain called {LIBVIRT_DOMAIN}")
        xml = self.work / "libvirt-domain.xml"
        xml.write_text(libvirt_domain_xml(self.console.path))
        created = self.virsh("create", str(xml), check=False)
        if created.returncode != 0:
            raise RuntimeError(f"virsh create: {created.stderr.strip()}")
        await self.console.booted()
        self.helper = await asyncio.create_subprocess_exec(
            SYSTEM_PYTHON, "-c", LIBVIRT_HELPER, LIBVIRT_URI, LIBVIRT_DOMAIN,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True,
        )  # fmt: skip
        major, rest = divmod(int((await self._reply())["version"]), 1_000_000)
        self.version = f"{major}.{rest // 1000}.{rest % 1000}"

    async def _reply(self) -> dict[str, Any]:
        assert self.helper is not None and self.helper.stdout is not None
        line = await self.helper.stdout.readline()
        if not line:
            raise RuntimeError("the libvirt binding helper exited")
        reply: dict[str, Any] = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"libvirt: {reply['error']}")
        return reply

    def nic_file(self, mac: str) -> Path:
        path = self.work / f"nic-{mac.replace(':', '')}.xml"
        if not path.exists():
            path.write_text(interface_xml(mac))
        return path

    async def api(self, op: str, mac: str) -> float:
        """``op`` through the Python binding, timed inside the helper process."""
        assert self.helper is not None and self.helper.stdin is not None
        self.helper.stdin.write(f"{op} {self.nic_file(mac)} {mac}\n".encode())
        await self.helper.stdin.drain()
        reply = await self._reply()
        if reply.get("pending"):
            raise RuntimeError(f"libvirt: the detach of {mac} is still pending")
        return float(reply["elapsed"])

    async def cli(self, op: str, mac: str) -> float:
        """``op`` through virsh: wall time, process start-up included."""
        path = self.nic_file(mac)
        start = time.perf_counter()
        proc = await asyncio.create_subprocess_exec(
            "virsh", "-c", LIBVIRT_URI, f"{op}-device", LIBVIRT_DOMAIN, str(path), "--live",
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        out, err = await proc.communicate()
        elapsed = time.perf_counter() - start
        if proc.returncode != 0:
            raise RuntimeError(f"virsh {op}-device: {err.decode().strip()}")
        if op == "detach" and b"request sent" in out:
            raise RuntimeError(f"virsh: the detach of {mac} is still pending")
        return elapsed

    async def aclose(self) -> None:
        """Destroy the domain, stop libvirtd, kill a QEMU it left behind."""
        if self.helper is not None and self.helper.returncode is None:
            self.helper.kill()
            await self.helper.wait()
        qemu = _read_pid(Path(f"/run/libvirt/qemu/{LIBVIRT_DOMAIN}.pid"))
        daemon = _read_pid(self.pidfile)
        if daemon is not None:
            self.virsh("destroy", LIBVIRT_DOMAIN, check=False)
            with contextlib.suppress(ProcessLookupError):
                os.kill(daemon, signal.SIGTERM)
                for _ in range(150):
                    os.kill(daemon, 0)
                    await asyncio.sleep(0.1)
                say(f"libvirtd {daemon} ignored SIGTERM; killing it")
                os.kill(daemon, signal.SIGKILL)
        if qemu is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(qemu, signal.SIGKILL)
        with contextlib.suppress(OSError):
            os.unlink(f"/var/log/libvirt/qemu/{LIBVIRT_DOMAIN}.log")


class LibvirtTool:
    """libvirt through one of its interfaces (``api`` or ``cli``); the MAC names the NIC."""

    def __init__(
        self, title: str, number: int, call: Callable[[str, str], Awaitable[float]]
    ) -> None:
        self.samples = Samples(title)
        self.number = number
        self.call = call

    async def attach(self, mac: str) -> tuple[float, str]:
        return await self.call("attach", mac), mac

    async def settle(self, token: str) -> None:
        """libvirt's QMP is its own: the guest reporting the MAC is the settling."""

    async def detach(self, token: str) -> float:
        return await self.call("detach", token)


async def measure_libvirt(work: Path, cycles: int) -> tuple[Samples, Samples, str]:
    """Start our libvirtd and the guest under it, alternate binding and virsh cycles."""
    say("starting a private libvirtd and the test guest as a transient libvirt domain")
    libvirt = Libvirt(work)
    try:
        await libvirt.start()
        api = LibvirtTool("libvirt API", 3, libvirt.api)
        cli = LibvirtTool("virsh", 4, libvirt.cli)
        await alternate([api, cli], libvirt.console, cycles, "libvirt")
    finally:
        await libvirt.aclose()
    return api.samples, cli.samples, libvirt.version


# -- the run -------------------------------------------------------------------------------


def report(tools: list[Samples], notes: list[str], cycles: int, judge: bool) -> bool:
    for note in notes:
        print(note)
    print(f"guest saw every NIC: {', '.join(f'{t.title} {t.seen}/{cycles}' for t in tools)}")
    print()
    print(" " * 12 + "".join(f"{t.title:>18}" for t in tools))
    print(" " * 12 + "".join(f"{'median':>10}{'p90':>8}" for _ in tools))
    for which in ("attach", "detach"):
        cells = "".join(
            f"{t.median(which) * 1000:>10.2f}{t.p90(which) * 1000:>8.2f}" for t in tools
        )
        print(f"{which + ' (ms)':<12}{cells}")
    print()
    ok = True
    for which in ("attach", "detach"):
        ratio = tools[0].median(which) / tools[1].median(which)
        bound = MAX_RATIOS[which]
        met = ratio <= bound
        ok = ok and met
        verdict = ("ok" if met else "MISSED") if judge else "(not judged: --profile)"
        print(f"{which} qctl/hand-written = {ratio:.2f} (target <= {bound}) {verdict}")
    sys.stdout.flush()
    return ok or not judge


async def bench(cycles: int, binary: str, with_libvirt: bool, profile_to: str | None) -> bool:
    work = Path(tempfile.mkdtemp(prefix="qctl-bench-", dir=tmpfs_dir()))
    netlink = Netlink()
    profile = cProfile.Profile() if profile_to else None
    bridge_made = False
    try:
        run(["ip", "link", "add", BRIDGE, "type", "bridge"])
        bridge_made = True
        run(["ip", "link", "set", BRIDGE, "up"])
        ours, hand = await measure_qemu_side(work, cycles, binary, netlink, profile)
        tools = [ours, hand]
        qemu_version = run([binary, "--version"]).stdout.splitlines()[0]
        notes = [
            f"NIC hot-plug: virtio-net-pci, tap on bridge {BRIDGE}, TCG q35 guest; {qemu_version}",
            f"{cycles} timed cycles per tool after {WARMUP} warm-up cycles; qctl and "
            "hand-written alternate (ABBA) on the same guest, each on its own QMP monitor",
            "qctl: attach_device(InterfaceDef parsed beforehand: XML parsing is not timed), "
            f"detach_device(alias) until DETACHED; state root on tmpfs ({work})",
            "hand-written: qemu.qmp + pyroute2: tun ioctl, 1 netlink request, getfd, "
            "netdev_add, device_add / device_del, DEVICE_DELETED, netdev_del",
        ]
        reason = libvirt_unavailable() if with_libvirt else "skipped (--no-libvirt)"
        if reason is None:
            api, cli, version = await measure_libvirt(work, cycles)
            tools += [api, cli]
            notes.append(
                f"libvirt {version}: its own libvirtd in this netns, the same guest as a "
                "transient domain, the same <interface type='bridge'>; 'libvirt API' = "
                "python3-libvirt attach/detachDeviceFlags(LIVE) timed in-process; 'virsh' = "
                "attach-device/detach-device --live wall time, virsh start-up included"
            )
        else:
            notes.append(f"libvirt: {reason}")
        if profile is not None and profile_to is not None:
            profile.dump_stats(profile_to)
            print(f"qctl's timed calls under cProfile (saved to {profile_to}):")
            stats = pstats.Stats(profile, stream=sys.stdout).sort_stats("cumulative")
            stats.print_stats("/qctl/", 30)
        return report(tools, notes, cycles, judge=profile is None)
    finally:
        await netlink.aclose()
        if bridge_made:
            run(["ip", "link", "del", BRIDGE], check=False)
        shutil.rmtree(work, ignore_errors=True)


async def bench_until_signal(*args: Any) -> bool:
    """:func:`bench`, cancelled (and so cleaned up) on SIGTERM as on Ctrl-C."""
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    return await bench(*args)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=30, help="timed cycles per tool")
    parser.add_argument("--binary", default=os.environ.get("QCTL_QEMU", "qemu-system-x86_64"))
    parser.add_argument("--no-libvirt", action="store_true", help="leave libvirt out")
    parser.add_argument("--profile", metavar="FILE", help="cProfile qctl's timed calls")
    args = parser.parse_args()
    if args.cycles < 1:
        parser.error("--cycles must be at least 1")
    if not (GUEST / "initrd.img").is_file():
        sys.exit("bench hotplug: no test guest in .cache/guest; run ./scripts/bootstrap")
    if not in_private_netns():
        reexec_in_private_netns()
    try:
        binary = resolve_binary(args.binary)
        ok = asyncio.run(bench_until_signal(args.cycles, binary, not args.no_libvirt, args.profile))
    except (KeyboardInterrupt, asyncio.CancelledError):
        say("interrupted; cleaned up")
        return 130
    except (RuntimeError, OSError, subprocess.CalledProcessError, qctl.QctlError) as exc:
        detail = f": {exc.stderr.strip()}" if isinstance(exc, subprocess.CalledProcessError) else ""
        say(f"failed: {exc}{detail}")
        return 1
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
