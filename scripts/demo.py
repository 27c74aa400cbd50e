"""The qctl demo: what the library does, on the bundled examples and the bundled test guest.

Run by ``scripts/demo`` inside a private network namespace (``unshare --net``), so the
bridge and taps it makes never touch the host. Uses the public API only.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import qctl

REPO = Path(__file__).resolve().parents[1]
GUEST = REPO / ".cache" / "guest"
BRIDGE = "qctlbr0"
NICS_RE = re.compile(r"^QCTL-NICS:(.*)$", re.MULTILINE)


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


def guest_nics(console: Path) -> list[str]:
    reports = NICS_RE.findall(console.read_text(errors="replace")) if console.exists() else []
    return reports[-1].split() if reports else []


async def wait_nics(console: Path, count: int) -> list[str]:
    async with asyncio.timeout(90):
        while len(guest_nics(console)) != count:
            await asyncio.sleep(0.1)
    return guest_nics(console)


def domain_xml(console: Path) -> str:
    kernel = GUEST / "vmlinux" if (GUEST / "vmlinux").is_file() else GUEST / "vmlinuz"
    return f"""<domain type='qemu'>
  <name>qctl-demo</name>
  <memory unit='MiB'>256</memory>
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
    <kernel>{kernel}</kernel>
    <initrd>{GUEST / "initrd.img"}</initrd>
    <cmdline>console=ttyS0 quiet panic=-1</cmdline>
  </os>
  <devices>
    <controller type='pci' index='0' model='pcie-root'/>
    <serial type='file'><source path='{console}'/></serial>
    <interface type='bridge'>
      <mac address='52:54:00:de:00:01'/>
      <source bridge='{BRIDGE}'/>
      <model type='virtio'/>
    </interface>
  </devices>
</domain>
"""


async def boot_guest(work: Path) -> None:
    step(f"booting the test guest (TCG) with a tap NIC on bridge {BRIDGE}")
    subprocess.run(["ip", "link", "add", BRIDGE, "type", "bridge"], check=True)
    subprocess.run(["ip", "link", "set", BRIDGE, "up"], check=True)
    console = work / "serial.log"
    defn = qctl.parse_domain(domain_xml(console))
    started = time.monotonic()
    dom = await qctl.Domain.start(defn, state_root=work / "state")
    try:
        print(f"  QEMU pid {dom.process.pid}; waiting for the guest to report its NICs…")
        nics = await wait_nics(console, 1)
        print(f"  guest sees: {' '.join(nics)} ({time.monotonic() - started:.1f}s after start)")
        tap = dom.live.interfaces[0].target_dev
        print(f"  host side: tap {tap} on {BRIDGE}:")
        subprocess.run(["ip", "-br", "link", "show", "master", BRIDGE], check=True)
        step("live XML of the interface (alias, tap, backend, address filled in)")
        live = dom.xml()
        print(live[live.index("<interface") : live.index("</interface>") + len("</interface>")])
    finally:
        step("stopping (ACPI power-down)")
        await dom.stop(grace=20)
    left = subprocess.run(
        ["ip", "-br", "link", "show", "master", BRIDGE], capture_output=True, text=True, check=True
    ).stdout.strip()
    print(f"  stopped; taps left on {BRIDGE}: {left or 'none'}")


async def main() -> int:
    show_examples()
    await show_caps()
    with tempfile.TemporaryDirectory(prefix="qctl-demo-") as tmp:
        await boot_guest(Path(tmp))
    step("done")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
