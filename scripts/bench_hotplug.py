"""Benchmark of NIC hot-plug: ``scripts/bench hotplug [--cycles N] [--no-libvirt]``.

One run measures attach and detach latency of a virtio NIC whose tap joins a Linux bridge,
on the bundled test guest (TCG, q35, empty pcie-root-ports), for:

- qctl: ``await dom.attach_device(iface)`` with the ``InterfaceDef`` parsed beforehand (the
  comparison is about the hot-plug path, not XML parsing), and ``await
  dom.detach_device(alias)``, which returns DETACHED once QEMU sent DEVICE_DELETED and the
  netdev, the tap and the ledger entry are gone;
- hand-written: the minimal qemu.qmp + pyroute2 script doing the same steps on the same
  guest. Attach: open /dev/net/tun, ``TUNSETIFF`` (IFF_TAP|IFF_NO_PI|IFF_VNET_HDR, kernel
  picks ``vnetN``), one netlink request setting the tap's MAC (``fe:`` + the guest's last
  five bytes), its master (the bridge) and ``up``; ``send_fd_scm`` + ``getfd``,
  ``netdev_add`` (tap, fd=name), ``device_add`` (virtio-net-pci, bus=pci.N, addr=0x0),
  close its fd. Detach: ``device_del``, wait for DEVICE_DELETED naming the device,
  ``netdev_del``, delete the tap if it outlived QEMU's fd (it never does);
- libvirt, when installed and its daemon can be started privately: the same guest as a
  transient libvirt domain with the same ``<interface type='bridge'>``, through the Python
  binding (run by /usr/bin/python3, timed inside that process) and through ``virsh
  attach-device/detach-device --live`` (wall time, including virsh's start-up).

The whole run happens in a private network namespace (the script re-executes itself under
``unshare --net``), so the bridge and the taps never touch the host; our own libvirtd is
started inside it too, so libvirt's taps join the same bridge. The qctl state root is a
temporary directory on tmpfs (as /run is in production; the status file is fsynced at each
ledger write).

Order: qctl and the hand-written script alternate cycle by cycle, in ABBA order (q h, h q,
…) to spread noise and order effects. QEMU serves one QMP client at a time, so they take
turns on the monitor: qctl's handle is closed (``Domain.aclose``, QEMU runs on) before the
hand-written client connects, and reopened with ``Domain.connect`` afterwards; connecting
(and the capabilities lookup a fresh handle does once) is not timed, for either side.
After each attach and each detach, untimed, the script waits until the guest reports the
NIC's MAC (or its absence) on the serial console, so every tool starts from a settled guest
and we know the guest took part.

Prints a table (median and p90 per tool) and the ratios qctl/hand-written; exits 1 when
either exceeds 1.25.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import json
import os
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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyroute2 import AsyncIPRoute
from qemu.qmp import QMPClient

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
NETNS_MARK = "QCTL_BENCH_NETNS"
BOOT_TIMEOUT = 120.0
SEEN_TIMEOUT = 30.0
DETACH_TIMEOUT = 10.0
WARMUP = 2

# <linux/if_tun.h>
TUNSETIFF = 0x400454CA
IFF_TAP, IFF_NO_PI, IFF_VNET_HDR = 0x0002, 0x1000, 0x4000
NICS_RE = re.compile(r"^QCTL-NICS:(.*)$", re.MULTILINE)


def say(text: str) -> None:
    """Progress, on stderr (the results go to stdout)."""
    print(f"bench hotplug: {text}", file=sys.stderr, flush=True)


# -- the private network namespace ---------------------------------------------------------


def in_private_netns() -> bool:
    """Whether this process's network namespace is not pid 1's (or we made it ourselves)."""
    try:
        return os.stat("/proc/self/ns/net").st_ino != os.stat("/proc/1/ns/net").st_ino
    except OSError:
        return os.environ.get(NETNS_MARK) == "1"


def reexec_in_private_netns() -> None:
    """Run this script again in a new network namespace whose loopback is up."""
    os.environ[NETNS_MARK] = "1"
    script = os.path.abspath(__file__)
    os.execvp(
        "unshare",
        ["unshare", "--net", "--", "sh", "-c", 'ip link set lo up && exec "$@"', "sh",
         sys.executable, script, *sys.argv[1:]],
    )  # fmt: skip


def tmpfs_dir() -> Path:
    """/run when it is a tmpfs (as on a normal host), else /dev/shm."""
    mounts = {}
    with open("/proc/self/mounts") as table:
        for line in table:
            fields = line.split()
            mounts[fields[1]] = fields[2]
    return Path("/run") if mounts.get("/run") == "tmpfs" else Path("/dev/shm")


def run(argv: list[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=check)


# -- measurements ---------------------------------------------------------------------------


@dataclass
class Samples:
    """One tool's timings (seconds) and how many of its NICs the guest reported."""

    title: str
    attach: list[float] = field(default_factory=list)
    detach: list[float] = field(default_factory=list)
    seen: int = 0

    def median(self, which: str) -> float:
        return statistics.median(getattr(self, which))

    def p90(self, which: str) -> float:
        values: list[float] = getattr(self, which)
        if len(values) < 2:
            return values[0]
        return statistics.quantiles(values, n=10, method="inclusive")[8]


def mac_for(tool: int, cycle: int) -> str:
    """A distinct guest MAC per tool and cycle, so each report names one device."""
    return f"52:54:00:b{tool}:{cycle // 256:02x}:{cycle % 256:02x}"


class Console:
    """The guest's serial log: its ``QCTL-NICS:`` reports of the NICs it sees."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def macs(self) -> set[str] | None:
        try:
            reports = NICS_RE.findall(self.path.read_text(errors="replace"))
        except FileNotFoundError:
            return None
        if not reports:
            return None
        return {entry.split(",")[2] for entry in reports[-1].split()}

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

    async def seen(self, mac: str) -> None:
        await self.wait(lambda macs: mac in macs, f"NIC {mac}", SEEN_TIMEOUT)

    async def gone(self, mac: str) -> None:
        await self.wait(lambda macs: mac not in macs, f"the removal of NIC {mac}", SEEN_TIMEOUT)


# -- qctl ------------------------------------------------------------------------------


class QctlSide:
    """qctl's handle on the benchmark domain, closed while the hand-written client has QMP."""

    def __init__(self, root: Path, netlink: Netlink) -> None:
        self.root = root
        self.netlink = netlink
        self.dom: qctl.Domain | None = None
        self.pid: int | None = None

    async def start(self, defn: qctl.DomainDef, caps: qctl.QEMUCaps) -> None:
        self.dom = await qctl.Domain.start(
            defn, caps=caps, state_root=self.root, netlink=self.netlink
        )
        self.pid = self.dom.process.pid

    async def open(self) -> qctl.Domain:
        if self.dom is None:
            self.dom = await qctl.Domain.connect(DOMAIN, state_root=self.root, netlink=self.netlink)
            await self.dom.capabilities()  # a long-lived handle has them; looked up once, untimed
        return self.dom

    async def close(self) -> None:
        if self.dom is not None:
            dom, self.dom = self.dom, None
            await dom.aclose()

    async def attach(self, iface: qctl.InterfaceDef) -> tuple[float, str]:
        dom = await self.open()
        start = time.perf_counter()
        live = await dom.attach_device(iface)
        elapsed = time.perf_counter() - start
        assert live.alias is not None
        return elapsed, live.alias

    async def detach(self, alias: str) -> float:
        dom = await self.open()
        start = time.perf_counter()
        result = await dom.detach_device(alias, wait=DETACH_TIMEOUT)
        elapsed = time.perf_counter() - start
        if result is not qctl.DetachResult.DETACHED:
            raise RuntimeError(f"qctl: detach of {alias} is {result}")
        return elapsed

    async def stop(self) -> None:
        """Stop QEMU through a handle (reconnecting if needed), else kill it."""
        try:
            dom = await self.open()
            await dom.stop(force=True)
            await dom.aclose()
            self.dom = None
        except (qctl.QctlError, OSError) as exc:
            say(f"stopping through qctl failed ({exc}); killing QEMU")
            if self.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGKILL)


# -- the hand-written script -------------------------------------------------------------


class HandWritten:
    """The minimal qemu.qmp script: the same QMP steps as qctl, nothing else.

    It has its own QMP connection and a pyroute2 netlink socket kept open from one cycle to
    the next, as any script doing more than one hot-plug would.
    """

    def __init__(self, qmp_socket: Path, bridge_index: int) -> None:
        self.qmp_socket = qmp_socket
        self.bridge_index = bridge_index
        self.ipr = AsyncIPRoute()
        self.client: QMPClient | None = None

    async def open(self) -> QMPClient:
        if self.client is None:
            client = QMPClient("hand-written")
            await client.connect(str(self.qmp_socket))
            self.client = client
        return self.client

    async def close(self) -> None:
        if self.client is not None:
            client, self.client = self.client, None
            await client.disconnect()

    async def aclose(self) -> None:
        await self.close()
        self.ipr.close()

    async def attach(self, device: str, mac: str) -> tuple[float, str]:
        qmp = await self.open()
        start = time.perf_counter()
        tap = await self._attach(qmp, device, mac)
        return time.perf_counter() - start, tap

    async def _attach(self, qmp: QMPClient, device: str, mac: str) -> str:
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
            qmp.send_fd_scm(fd)
            await qmp.execute("getfd", {"fdname": device})
            await qmp.execute("netdev_add", {"type": "tap", "id": f"host{device}", "fd": device})
            await qmp.execute(
                "device_add",
                {"driver": "virtio-net-pci", "netdev": f"host{device}", "id": device,
                 "mac": mac, "bus": HAND_BUS, "addr": "0x0"},
            )  # fmt: skip
        finally:
            os.close(fd)
        return tap

    async def detach(self, device: str, tap: str) -> float:
        qmp = await self.open()
        start = time.perf_counter()
        with qmp.listener("DEVICE_DELETED") as deleted:
            await qmp.execute("device_del", {"id": device})
            async with asyncio.timeout(DETACH_TIMEOUT):
                async for event in deleted:
                    if event["data"].get("device") == device:
                        break
        await qmp.execute("netdev_del", {"id": f"host{device}"})
        with contextlib.suppress(OSError):  # QEMU closed the last fd: the tap is gone
            await self.ipr.link("del", index=socket.if_nametoindex(tap))
        return time.perf_counter() - start


# -- libvirt ---------------------------------------------------------------------------------

# Run by /usr/bin/python3 (the venv cannot import the distribution's libvirt binding). Reads
# "attach|detach XMLFILE" lines, answers one JSON line each, timing only the libvirt call.
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
        return "needs root (this bench starts its own libvirtd)"
    conf = Path("/etc/libvirt/qemu.conf")
    settings: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in conf.read_text().splitlines():
            match = re.match(r"^\s*(\w+)\s*=\s*(.*?)\s*$", line)
            if match:
                settings[match[1]] = match[2]
    wanted = {"user": '"root"', "group": '"root"', "stdio_handler": '"file"'}
    if any(settings.get(k) != v for k, v in wanted.items()):
        return f'skipped: {conf} needs user/group "root" and stdio_handler "file"'
    if (
        Path("/run/libvirt/libvirt-sock").exists()
        or run(["pgrep", "-x", "libvirtd"], check=False).returncode == 0
    ):
        return "skipped: a libvirtd is already running (this bench starts and stops its own)"
    autostart = Path("/etc/libvirt/qemu/networks/autostart")
    if autostart.is_dir() and any(autostart.iterdir()):
        return f"skipped: {autostart} is not empty (libvirtd would start those networks)"
    return None


def libvirt_domain_xml(console: Path) -> str:
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


def interface_xml(mac: str) -> str:
    return (
        f"<interface type='bridge'><mac address='{mac}'/><source bridge='{BRIDGE}'/>"
        "<model type='virtio'/></interface>"
    )


class LibvirtSide:
    """Our own libvirtd (in this network namespace), one transient domain, the binding helper."""

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
            raise RuntimeError(f"libvirt already has a domain {LIBVIRT_DOMAIN}")
        xml = self.work / "libvirt-domain.xml"
        xml.write_text(libvirt_domain_xml(self.console.path))
        created = self.virsh("create", str(xml), check=False)
        if created.returncode != 0:
            raise RuntimeError(f"virsh create failed: {created.stderr.strip()}")
        await self.console.wait(lambda macs: True, "its NICs after boot", BOOT_TIMEOUT)
        self.helper = await asyncio.create_subprocess_exec(
            SYSTEM_PYTHON, "-c", LIBVIRT_HELPER, LIBVIRT_URI, LIBVIRT_DOMAIN,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        )  # fmt: skip
        hello = await self._reply()
        major, rest = divmod(int(hello["version"]), 1_000_000)
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

    def _nic_file(self, mac: str) -> Path:
        path = self.work / f"nic-{mac.replace(':', '')}.xml"
        path.write_text(interface_xml(mac))
        return path

    async def api(self, op: str, mac: str) -> float:
        assert self.helper is not None and self.helper.stdin is not None
        self.helper.stdin.write(f"{op} {self._nic_file(mac)} {mac}\n".encode())
        await self.helper.stdin.drain()
        reply = await self._reply()
        if reply.get("pending"):
            raise RuntimeError(f"libvirt: detach of {mac} still pending")
        return float(reply["elapsed"])

    async def cli(self, op: str, mac: str) -> float:
        path = self._nic_file(mac)
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
            raise RuntimeError(f"virsh: detach of {mac} still pending")
        return elapsed

    async def aclose(self) -> None:
        """Destroy the domain, stop libvirtd, kill a QEMU it left; never raises."""
        if self.helper is not None:
            with contextlib.suppress(ProcessLookupError):
                self.helper.kill()
            await self.helper.wait()
        qemu_pid = _read_pid(Path(f"/run/libvirt/qemu/{LIBVIRT_DOMAIN}.pid"))
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
        if qemu_pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(qemu_pid, signal.SIGKILL)
        with contextlib.suppress(OSError):
            os.unlink(f"/var/log/libvirt/qemu/{LIBVIRT_DOMAIN}.log")


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text())
    except (OSError, ValueError):
        return None


# -- the run -----------------------------------------------------------------------------


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


async def measure_qemu_side(
    work: Path, cycles: int, binary: str, bridge_index: int, netlink: Netlink
) -> tuple[Samples, Samples]:
    """Boot the guest with qctl; alternate qctl and hand-written cycles on it; stop it."""
    q, h = Samples("qctl"), Samples("hand-written")
    console = Console(work / "serial.log")
    caps = await CapsCache().get(binary)
    ifaces = [qctl.parse_device(interface_xml(mac_for(1, c))) for c in range(cycles + WARMUP)]
    side = QctlSide(work / "state", netlink)
    say(f"booting the test guest with qctl (state root {side.root})")
    await side.start(qctl.parse_domain(domain_xml(console.path)), caps)
    hand: HandWritten | None = None
    try:
        await console.wait(lambda macs: True, "its NICs after boot", BOOT_TIMEOUT)
        dom = await side.open()
        hand = HandWritten(dom.directory.qmp_socket, bridge_index)

        async def qctl_cycle(c: int) -> None:
            await hand.close()  # type: ignore[union-attr]
            iface = ifaces[c]
            assert isinstance(iface, qctl.InterfaceDef) and iface.mac is not None
            attach, alias = await side.attach(iface)
            await console.seen(str(iface.mac))
            detach = await side.detach(alias)
            await console.gone(str(iface.mac))
            if c >= WARMUP:
                q.attach.append(attach)
                q.detach.append(detach)
                q.seen += 1

        async def hand_cycle(c: int) -> None:
            await side.close()
            mac = mac_for(2, c)
            assert hand is not None
            attach, tap = await hand.attach(f"hand{c}", mac)
            await console.seen(mac)
            detach = await hand.detach(f"hand{c}", tap)
            await console.gone(mac)
            if c >= WARMUP:
                h.attach.append(attach)
                h.detach.append(detach)
                h.seen += 1

        for c in range(cycles + WARMUP):
            first, second = (qctl_cycle, hand_cycle) if c % 2 == 0 else (hand_cycle, qctl_cycle)
            await first(c)
            await second(c)
            if c >= WARMUP and (c - WARMUP + 1) % 10 == 0:
                say(f"qctl/hand-written: {c - WARMUP + 1}/{cycles} cycles")
    finally:
        if hand is not None:
            await hand.aclose()
        await side.stop()
    return q, h


async def measure_libvirt(work: Path, cycles: int) -> tuple[Samples, Samples, str]:
    api, cli = Samples("libvirt API"), Samples("virsh")
    side = LibvirtSide(work)
    say("starting a private libvirtd and the test guest as a transient libvirt domain")
    try:
        await side.start()
        turns = [(api, side.api, 3), (cli, side.cli, 4)]
        for c in range(cycles + WARMUP):
            for samples, call, tool in turns if c % 2 == 0 else turns[::-1]:
                mac = mac_for(tool, c)
                attach = await call("attach", mac)
                await side.console.seen(mac)
                detach = await call("detach", mac)
                await side.console.gone(mac)
                if c >= WARMUP:
                    samples.attach.append(attach)
                    samples.detach.append(detach)
                    samples.seen += 1
            if c >= WARMUP and (c - WARMUP + 1) % 10 == 0:
                say(f"libvirt: {c - WARMUP + 1}/{cycles} cycles")
    finally:
        await side.aclose()
    return api, cli, side.version


def report(tools: list[Samples], cycles: int, notes: list[str]) -> bool:
    for note in notes:
        print(note)
    print(f"guest saw every NIC: {', '.join(f'{t.title} {t.seen}/{cycles}' for t in tools)}")
    print()
    width = 18
    print(" " * 12 + "".join(f"{t.title:>{width}}" for t in tools))
    print(" " * 12 + "".join(f"{'median':>10}{'p90':>8}" for _ in tools))
    for which in ("attach", "detach"):
        cells = "".join(
            f"{t.median(which) * 1000:>10.2f}{t.p90(which) * 1000:>8.2f}" for t in tools
        )
        print(f"{which + ' (ms)':<12}{cells}")
    print()
    ok = True
    q, h = tools[0], tools[1]
    for which in ("attach", "detach"):
        ratio = q.median(which) / h.median(which)
        verdict = "ok" if ratio <= MAX_RATIO else "MISSED"
        ok = ok and ratio <= MAX_RATIO
        print(f"{which} qctl/hand-written = {ratio:.2f} (target <= {MAX_RATIO}) {verdict}")
    return ok


async def bench(cycles: int, binary: str, with_libvirt: bool) -> bool:
    work = Path(tempfile.mkdtemp(prefix="qctl-bench-", dir=tmpfs_dir()))
    netlink = Netlink()
    try:
        run(["ip", "link", "add", BRIDGE, "type", "bridge"])
        run(["ip", "link", "set", BRIDGE, "up"])
        bridge_index = socket.if_nametoindex(BRIDGE)
        q, h = await measure_qemu_side(work, cycles, binary, bridge_index, netlink)
        tools = [q, h]
        version = run([binary, "--version"]).stdout.split("\n")[0]
        notes = [
            f"NIC hot-plug: virtio-net-pci, tap (vnet_hdr) on bridge {BRIDGE}, TCG q35 guest; "
            f"{version}",
            f"{cycles} timed cycles per tool after {WARMUP} warm-up cycles; qctl and "
            "hand-written alternate (ABBA) on the same guest, taking turns on its QMP monitor",
            "qctl: attach_device(InterfaceDef parsed beforehand: XML parsing is not timed), "
            "detach_device(alias) until DETACHED",
            "hand-written: qemu.qmp + pyroute2: tap, 1 netlink request, getfd, netdev_add, "
            "device_add / device_del, DEVICE_DELETED, netdev_del",
            f"state root: {work} (tmpfs)",
        ]
        reason = libvirt_unavailable() if with_libvirt else "skipped (--no-libvirt)"
        if reason is None and not os.access(SYSTEM_PYTHON, os.X_OK):
            reason = f"skipped: {SYSTEM_PYTHON} not found"
        if reason is None and run([SYSTEM_PYTHON, "-c", "import libvirt"], check=False).returncode:
            reason = "skipped: python3-libvirt is not installed (apt-get install python3-libvirt)"
        if reason is None:
            api, cli, lv_version = await measure_libvirt(work, cycles)
            tools += [api, cli]
            notes.append(
                f"libvirt {lv_version}: own libvirtd in this netns, same guest as a transient "
                "domain, same <interface type='bridge'>; 'libvirt API' = python3-libvirt "
                "attachDeviceFlags/detachDeviceFlags(LIVE) timed in-process; 'virsh' = "
                "attach-device/detach-device --live wall time, including virsh start-up"
            )
        else:
            notes.append(f"libvirt: {reason}")
        return report(tools, cycles, notes)
    finally:
        await netlink.aclose()
        run(["ip", "link", "del", BRIDGE], check=False)
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=30, help="timed cycles per tool")
    parser.add_argument("--binary", default=os.environ.get("QCTL_QEMU", "qemu-system-x86_64"))
    parser.add_argument("--no-libvirt", action="store_true", help="leave libvirt out")
    args = parser.parse_args()
    if args.cycles < 1:
        parser.error("--cycles must be at least 1")
    if not (GUEST / "initrd.img").is_file():
        print(
            "bench hotplug: no test guest in .cache/guest; run ./scripts/bootstrap", file=sys.stderr
        )
        return 2
    if not in_private_netns():
        reexec_in_private_netns()
    try:
        ok = asyncio.run(bench(args.cycles, resolve_binary(args.binary), not args.no_libvirt))
    except KeyboardInterrupt:
        say("interrupted; cleaned up")
        return 130
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
