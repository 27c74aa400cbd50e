"""The qctl demo: what the library does, on the bundled examples and the bundled test guest.

Run by ``scripts/demo`` inside a private network namespace (``unshare --net``), so the
bridge and taps it makes never touch the host. Uses the public API only.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import qctl
from qctl.testing import guest_xml

REPO = Path(__file__).resolve().parents[1]
GUEST = REPO / ".cache" / "guest"
NEWER_QEMU = REPO / ".cache" / "qemu-10.0" / "usr" / "bin" / "qemu-system-x86_64"
BRIDGE = "qctlbr0"
NICS_RE = re.compile(r"^QCTL-NICS:(.*)$")


def step(text: str) -> None:
    """Print a progress heading."""
    print(f"\n== {text}", flush=True)


def show_examples() -> None:
    step("validating the bundled examples")
    for path in sorted((REPO / "examples").glob("*.xml")):
        problems = qctl.check(path.read_text(), source=str(path.relative_to(REPO)))
        print(f"  {path.name:<36} {'valid' if not problems else problems[0]}")
    step("examples/domain-failover.xml, normalized")
    print(qctl.format_xml(qctl.load(REPO / "examples" / "domain-failover.xml")), end="")


async def show_caps() -> None:
    step("what this QEMU can do")
    started = time.monotonic()
    caps = await qctl.CapsCache().get("qemu-system-x86_64")
    print(f"  QEMU {caps.version_text} ({time.monotonic() - started:.2f}s, cached after the first)")
    for flag in (
        qctl.Capability.VIRTIO_NET_FAILOVER,
        qctl.Capability.NETDEV_JSON,
        qctl.Capability.VFIO_PCI,
        qctl.Capability.KVM_PRESENT,
    ):
        print(f"  {flag.value:<24} {'yes' if caps.has(flag) else 'no'}")


async def wait_nics(console: qctl.Console, count: int) -> list[str]:
    """The guest's next NIC report that lists ``count`` NICs (90 s at most)."""
    while True:
        nics = (await console.wait_for(NICS_RE, timeout=90)).group(1).split()
        if len(nics) == count:
            return nics


def ip(*args: str) -> str:
    """Run ``ip ARGS`` (in the demo's own network namespace) and return its output."""
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=True).stdout


def domain_xml(name: str = "qctl-demo", nics: str | None = None) -> str:
    """The bundled guest (the pytest plugin's domain) with ``nics`` (one NIC on the bridge)."""
    nics = nics or f"""<interface type='bridge'>
      <mac address='52:54:00:de:00:01'/>
      <source bridge='{BRIDGE}'/>
      <model type='virtio'/>
    </interface>"""
    return guest_xml(name, nics, directory=GUEST)


async def boot_guest(work: Path) -> None:
    step(f"booting the test guest (TCG) with a tap NIC on bridge {BRIDGE}")
    ip("link", "add", BRIDGE, "type", "bridge")
    ip("link", "set", BRIDGE, "up")
    defn = qctl.parse_domain(domain_xml())
    started = time.monotonic()
    dom = await qctl.Domain.start(defn, state_root=work / "state")
    # The guest's serial console: read from the log QEMU keeps of it, from its first byte.
    console = dom.console()
    try:
        print(f"  QEMU pid {dom.process.pid}; waiting for the guest to report its NICs…")
        nics = await wait_nics(console, 1)
        print(f"  guest sees: {' '.join(nics)} ({time.monotonic() - started:.1f}s after start)")
        tap = dom.live.interfaces[0].target_dev
        print(f"  host side: tap {tap} on {BRIDGE}:")
        print(ip("-br", "link", "show", "master", BRIDGE), end="")
        step("live XML of the interface (alias, tap, backend, address filled in)")
        live = dom.xml()
        print(live[live.index("<interface") : live.index("</interface>") + len("</interface>")])
        await hotplug(dom, console)
    finally:
        step("stopping (ACPI power-down)")
        await dom.stop(grace=20)
    left = ip("-br", "link", "show", "master", BRIDGE).strip()
    print(f"  stopped; taps left on {BRIDGE}: {left or 'none'}")


HOTPLUG_NIC = f"""<interface type='bridge'>
  <mac address='52:54:00:de:00:02'/>
  <source bridge='{BRIDGE}'/>
  <model type='virtio'/>
  <alias name='ua-hotplug'/>
</interface>"""


async def hotplug(dom: qctl.Domain, console: qctl.Console) -> None:
    step("hot-plugging a second NIC")
    print(HOTPLUG_NIC)
    started = time.monotonic()
    live = await dom.attach_device(HOTPLUG_NIC)
    took = (time.monotonic() - started) * 1000
    entry = dom.ledger.get(live.alias)
    assert entry is not None
    print(f"  attached {live.alias} in {took:.0f} ms: tap {entry.tap}, at {entry.guest_address}")
    nics = await wait_nics(console, 2)
    print(f"  guest sees: {' '.join(nics)}")
    step("unplugging it")
    started = time.monotonic()
    result = await dom.detach_device("ua-hotplug")
    took = (time.monotonic() - started) * 1000
    print(f"  {result.value} in {took:.0f} ms (DEVICE_DELETED received, netdev and tap released)")
    nics = await wait_nics(console, 1)
    print(f"  guest sees: {' '.join(nics)}; ledger holds: {[e.alias for e in dom.ledger]}")


# A failover pair: the virtio standby and an emulated e1000e standing in for the VF.
FAILOVER_NICS = f"""<interface type='bridge'>
      <mac address='52:54:00:de:00:03'/><source bridge='{BRIDGE}'/><model type='virtio'/>
      <teaming type='persistent'/><alias name='ua-standby'/>
    </interface>
    <interface type='bridge'>
      <mac address='52:54:00:de:00:03'/><source bridge='{BRIDGE}'/><model type='e1000e'/>
      <teaming type='transient' persistent='ua-standby'/><alias name='ua-primary'/>
    </interface>"""


async def migrate(work: Path) -> None:
    """A failover pair migrates live from the system's QEMU to QEMU 10.0 (or, without it,
    to another process of the same QEMU), as host upgrades need."""
    newer = NEWER_QEMU.is_file()
    step(f"live migration of a failover pair: QEMU 7.2 -> {'10.0' if newer else '7.2'}")
    source = await qctl.Domain.start(
        qctl.parse_domain(domain_xml("qctl-demo-mig", FAILOVER_NICS)), state_root=work / "a"
    )
    destination: qctl.Domain | None = None
    try:
        nics = await wait_nics(source.console(), 3)
        print(f"  source guest sees: {' '.join(nics)} (failover master, standby, primary)")
        # What travels: the source's definition without its host-side names; the
        # destination makes its own taps (here a second state root stands for host B).
        travelling = qctl.parse_domain(source.migratable_xml(), live=True)
        print(f"  machine type resolved on the source: {travelling.os.machine}")
        if newer:
            devices = dataclasses.replace(travelling.devices, emulator=str(NEWER_QEMU))
            travelling = dataclasses.replace(travelling, devices=devices)
        uri = "tcp:127.0.0.1:49152"  # confined QEMU cannot make a socket in our tmp dir
        listening = asyncio.Event()
        arriving = asyncio.ensure_future(
            qctl.Domain.incoming(travelling, uri, state_root=work / "b", ready=listening.set)
        )
        waiter = asyncio.ensure_future(listening.wait())
        await asyncio.wait({arriving, waiter}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if arriving.done():
            arriving.result()  # the destination failed before listening: say why
        outcome = await source.migrate(uri, timeout=120)
        destination = await arriving
        print(
            f"  migrated in {outcome.wall_time:.2f}s, guest paused {outcome.downtime_ms} ms; "
            f"QEMU unplugged {', '.join(outcome.unplugged)} before and qctl quit the source"
        )
        caps = await destination.capabilities()
        print(f"  destination runs QEMU {caps.version_text}")
        nics = await wait_nics(destination.console(), 3)
        print(f"  destination guest sees: {' '.join(nics)} (primary plugged again)")
    finally:
        await source.stop(force=True)  # a no-op once it migrated
        if destination is not None:
            await destination.stop(force=True)


async def main() -> int:
    show_examples()
    await show_caps()
    with tempfile.TemporaryDirectory(prefix="qctl-demo-") as tmp:
        await boot_guest(Path(tmp))
        await migrate(Path(tmp))
    step("done")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
