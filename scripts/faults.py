"""Fault injection: kill -9 and double Ctrl-C at random points, then check that the books
tell the truth.

Run by ``scripts/faults [--trials N] [--seed S]`` inside a private network namespace. It
boots the bundled guest (TCG) with spare PCIe ports, then runs trials of three kinds, each
a real ``qctl`` process interrupted at a random moment of its life:

- ``kill-attach``: ``qctl attach-device`` (an ethernet NIC on a bridge), SIGKILL;
- ``sigint-twice``: ``qctl attach-device`` or ``detach-device``, SIGINT twice 5 ms apart
  (the second must not cut the rollback short);
- ``kill-start``: ``qctl start`` of a second, paused domain, SIGKILL; the next command on
  that name must find and end its QEMU.

After every trial a connect reconciles, and the books are compared with the world:
the ledger against QEMU's devices (``qom-list``) and netdevs (``info network``), the
ledger's taps against the taps in the namespace and the tun fds QEMU holds. Prints one
line per inconsistency and a summary; exits 1 when there was any.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from support import processes_naming  # noqa: E402

import qctl  # noqa: E402

GUEST = REPO / ".cache" / "guest"
BRIDGE = "qfltbr0"
SETTLE = 15.0  # seconds a pending guest-side unplug may take to settle
PORTS = "\n".join(
    f"    <controller type='pci' index='{i}' model='pcie-root-port'/>" for i in range(1, 5)
)


def domain_xml(name: str, work: Path, *, guest: bool) -> str:
    kernel = GUEST / ("vmlinux" if (GUEST / "vmlinux").is_file() else "vmlinuz")
    boot = (
        f"<kernel>{kernel}</kernel><initrd>{GUEST / 'initrd.img'}</initrd>"
        "<cmdline>console=ttyS0 quiet panic=-1</cmdline>"
        if guest
        else ""
    )
    source = f"<source bridge='{BRIDGE}'/>"
    nic = "" if guest else f"<interface type='bridge'>{source}<model type='virtio'/></interface>"
    return f"""<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>{256 if guest else 64}</memory>
  <os><type arch='x86_64' machine='q35'>hvm</type>{boot}</os>
  <devices>
    <serial type='file'><source path='{work / (name + ".log")}'/></serial>
{PORTS}
    {nic}
  </devices>
</domain>"""


def qctl_argv(*args: str, state: Path) -> list[str]:
    return [sys.executable, "-m", "qctl.cli.main", *args, "--state-dir", str(state)]


def run(*args: str, state: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(qctl_argv(*args, state=state), capture_output=True, text=True)


def interrupt(argv: list[str], delay: float, how: str) -> int:
    """Start ``argv``, interrupt it after ``delay`` seconds; its exit status."""
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    time.sleep(delay)
    if proc.poll() is None:
        if how == "kill":
            proc.kill()
        else:
            proc.send_signal(signal.SIGINT)
            time.sleep(0.005)
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    # Python itself prints a traceback for a Ctrl-C that comes while it is still importing,
    # before qctl's CLI runs (no frame of its main module but the module's own): not qctl's.
    # The second Ctrl-C may then land in Python's own exit (logging's atexit callback):
    # every exception said is a KeyboardInterrupt.
    raised = re.findall(r"^(\w+(?:Error|Exception|Interrupt|Exit))\b", err, re.MULTILINE)
    before_qctl = set(raised) == {"KeyboardInterrupt"} and not re.search(
        r'/qctl/cli/main\.py", line \d+, in (?!<module>)', err
    )
    if "Traceback" in err and not before_qctl:
        print(f"  traceback from {' '.join(argv[3:5])}:\n{err}", file=sys.stderr)
    return proc.returncode


def taps_in_namespace() -> set[str]:
    """Tap devices in this network namespace (asked of the kernel: /sys may show another)."""
    links = json.loads(subprocess.run(
        ["ip", "-j", "-d", "link", "show"], capture_output=True, text=True, check=True
    ).stdout)
    return {
        link["ifname"] for link in links if link.get("linkinfo", {}).get("info_kind") == "tun"
    }


def tun_fds(pid: int) -> int:
    count = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            if os.readlink(fd) == "/dev/net/tun":
                count += 1
        except OSError:
            continue
    return count


async def check(name: str, state: Path) -> list[str]:
    """Reconcile (a connect), then compare the books with QEMU and the host.

    A detach cut short after its ``device_del`` reached QEMU is honestly ``detaching``
    until the guest lets go (PCIe hot-unplug takes the guest ~5 s); each later connect
    reconciles it, so the check connects again until it settles or ``SETTLE`` runs out.
    That includes an entry whose device went between the connect's reconciling and the
    check's own look at QEMU (the guest let go just then): the next connect (one, no more)
    must settle it.
    """
    problems: list[str] = []
    deadline = time.monotonic() + SETTLE
    gone: set[str] = set()  # detaching entries already seen without their device
    while True:
        async with qctl.Domain.connect(name, state_root=state) as dom:
            present = await dom.monitor.peripherals()
            netdevs = await dom.monitor.netdevs()
            ledger = list(dom.ledger)
            pid = dom.process.pid
        detaching = {e.alias for e in ledger if e.state == "detaching"}
        pending = bool(detaching & present or (detaching - present) - gone)
        gone |= detaching - present
        if not pending or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    for entry in ledger:
        if entry.state != "attached":
            problems.append(f"{entry.alias} is {entry.state} after reconciliation")
        if entry.alias not in present:
            problems.append(f"{entry.alias} in the ledger, not in QEMU")
        if entry.netdev_id and entry.netdev_id not in netdevs:
            problems.append(f"{entry.netdev_id} in the ledger, not in QEMU's netdevs")
    aliases = {e.alias for e in ledger}
    for device in present:
        if device.startswith(("net", "ua-")) and device not in aliases:
            problems.append(f"QEMU has {device}, the ledger does not")
    for netdev in netdevs:
        if netdev.startswith("host") and netdev.removeprefix("host") not in aliases:
            problems.append(f"QEMU has netdev {netdev}, the ledger does not")
    ledger_taps = {e.tap for e in ledger if e.tap}
    host_taps = taps_in_namespace() - {t for t in taps_in_namespace() if t.startswith("qflt")}
    if ledger_taps != host_taps:
        problems.append(f"taps: ledger {sorted(ledger_taps)}, host {sorted(host_taps)}")
    if tun_fds(pid) != len(ledger_taps):
        problems.append(f"QEMU holds {tun_fds(pid)} tun fds for {len(ledger_taps)} taps")
    return problems


async def reset(name: str, state: Path) -> None:
    """Detach whatever the last trial left, so the next one has a free port."""
    async with qctl.Domain.connect(name, state_root=state) as dom:
        for entry in list(dom.ledger):
            await dom.detach_device(entry.alias, wait=10)


async def trial_kill_start(work: Path, state: Path, n: int, rng: random.Random) -> list[str]:
    name = f"fltstart{n}"
    xml = work / f"{name}.xml"
    xml.write_text(domain_xml(name, work, guest=False))
    delay = rng.uniform(0.0, 1.2)
    interrupt(qctl_argv("start", str(xml), state=state), delay, "kill")
    run("list", state=state)  # any command on the root cleans a start cut short
    if (state / "domains" / name / "status.json").exists():
        run("stop", name, "--force", state=state)
    else:
        run("dumpxml", name, state=state)  # a connect to the name reaps what is left
    problems = []
    pidfile = str(state / "domains" / name / "qemu.pid")
    for _ in range(50):
        if not processes_naming(pidfile):
            break
        await asyncio.sleep(0.1)
    if processes_naming(pidfile):
        problems.append(f"start killed after {delay:.2f}s left QEMU {processes_naming(pidfile)}")
    if (state / "domains" / name).exists():
        problems.append(f"start killed after {delay:.2f}s left its state directory")
    return problems


async def trials(args: argparse.Namespace) -> int:
    """Boot the guest, run the trials, report."""
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="qctl-faults-") as tmp:
        work = Path(tmp)
        state = work / "state"
        name = "fltguest"
        (work / "guest.xml").write_text(domain_xml(name, work, guest=True))
        started = run("start", str(work / "guest.xml"), state=state)
        if started.returncode:
            print(started.stderr, file=sys.stderr)
            return 2
        nic = work / "nic.xml"
        nic.write_text(
            f"<interface type='bridge'><source bridge='{BRIDGE}'/><model type='virtio'/>"
            "</interface>"
        )
        began = time.monotonic()
        run("attach-device", name, str(nic), state=state)
        attach_time = time.monotonic() - began
        await reset(name, state)
        counts: dict[str, int] = {}
        failures = 0
        try:
            for n in range(args.trials):
                kind = rng.choice(["kill-attach", "sigint-twice", "kill-start"])
                counts[kind] = counts.get(kind, 0) + 1
                if kind == "kill-start":
                    problems = await trial_kill_start(work, state, n, rng)
                else:
                    detaching = kind == "sigint-twice" and rng.random() < 0.5
                    if detaching:
                        run("attach-device", name, str(nic), state=state)
                        argv = qctl_argv("detach-device", name, "--alias", "net0", state=state)
                    else:
                        argv = qctl_argv("attach-device", name, str(nic), state=state)
                    delay = rng.uniform(0.0, attach_time * 1.3)
                    interrupt(argv, delay, "kill" if kind == "kill-attach" else "int")
                    problems = await check(name, state)
                    await reset(name, state)
                    problems += [f"after reset: {p}" for p in await check(name, state)]
                for problem in problems:
                    print(f"  trial {n} ({kind}): {problem}")
                failures += bool(problems)
        finally:
            run("stop", name, "--force", state=state)
    summary = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
    print(f"faults: {args.trials} trials ({summary}); {failures} with inconsistencies")
    return 1 if failures else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    args = parser.parse_args()
    print(f"faults: {args.trials} trials, seed {args.seed}")
    subprocess.run(["ip", "link", "add", BRIDGE, "type", "bridge"], check=True)
    subprocess.run(["ip", "link", "set", BRIDGE, "up"], check=True)
    return asyncio.run(trials(args))


if __name__ == "__main__":
    sys.exit(main())
