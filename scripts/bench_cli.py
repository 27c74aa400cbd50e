"""Benchmark of the ``qctl`` command's start-up: ``scripts/bench cli [--runs N] [--cycles N]
[--install-libvirt] [--no-libvirt]``.

Whole-process wall time, as a script calling the command per step pays it: each sample is
one ``subprocess.run`` of the installed ``qctl`` (the venv's entry point), from fork to
exit. Every command runs once untimed (warm-up: page cache, ``.pyc`` files, the caps
cache), then ``--runs`` times (at least 9); the median is judged:

- ``qctl --help`` <= 80 ms;
- ``qctl validate examples/domain-basic.xml`` <= 150 ms;
- ``qctl list`` <= 150 ms, with the bench's guest running in the listed state root;
- ``qctl attach-device`` + ``qctl detach-device`` of a virtio NIC on a bridge, on the bundled
  test guest (TCG, q35), within 2x of ``virsh attach-device`` + ``virsh detach-device``
  (``--live``) of the same NIC on the same guest run by libvirt. Each detach waits for the
  guest to let the NIC go (qctl ``--wait 30``; virsh waits for DEVICE_DELETED itself); between
  operations, untimed, the guest's serial console must report the NIC present or gone.
  Both guests run at once and the cycles alternate (qctl and virsh, then virsh and qctl, …);
  the ratio judged is the median of each pair's ratio, so neither a drift in the machine's
  speed (whole-process times here wander by 30% within minutes) nor going first can favour
  either side.

libvirt is not part of a fresh machine and no test needs it: without it the virsh column
says "virsh not installed" and the ratio is not judged. ``--install-libvirt`` installs it
with apt-get first (libvirt-daemon-system, libvirt-clients, python3-libvirt) and sets
in /etc/libvirt/qemu.conf what the bench's private libvirtd needs (QEMU as root, stdio to
files), and removes the default network's autostart link. The bench runs
its own libvirtd, as ``scripts/bench hotplug`` does (whose helpers it uses).

Runs in a private network namespace (re-executing itself under ``unshare --net``), so the
bridge and taps never touch the host. Exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_hotplug import (
    BRIDGE,
    GUEST,
    NETNS_MARK,
    Console,
    Libvirt,
    domain_xml,
    in_private_netns,
    interface_xml,
    libvirt_unavailable,
    mac_for,
    run,
    tmpfs_dir,
)

REPO = Path(__file__).resolve().parents[1]
QCTL = str(Path(sys.executable).with_name("qctl"))
EXAMPLE = str(REPO / "examples" / "domain-basic.xml")
NAME = "qctl-bench-hotplug"  # the domain bench_hotplug's domain_xml() names
TARGETS_MS = {"--help": 80.0, "validate": 150.0, "list": 150.0}
MAX_RATIO = 2.0
MIN_RUNS = 9
LIBVIRT_PACKAGES = ["libvirt-daemon-system", "libvirt-clients", "python3-libvirt"]


def reexec_in_private_netns() -> None:
    """Run this script again in a new network namespace whose loopback is up."""
    setup = (
        f'ip link set lo up && export {NETNS_MARK}=$(stat -L -c %i /proc/self/ns/net) && exec "$@"'
    )
    argv = [sys.executable, str(Path(__file__).resolve()), *sys.argv[1:]]
    os.execvp("unshare", ["unshare", "--net", "--", "sh", "-c", setup, "sh", *argv])


def say(text: str) -> None:
    print(f"bench cli: {text}", file=sys.stderr, flush=True)


#: the measured commands may write their bytecode (as an installed package has it): a
#: PYTHONDONTWRITEBYTECODE inherited from a development shell would time the compiler
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def wall(argv: list[str]) -> float:
    """Seconds from start to exit of ``argv``, which must succeed."""
    start = time.perf_counter()
    done = subprocess.run(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=ENV
    )
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: exit {done.returncode}: {done.stderr.strip()}")
    return elapsed


def startup(state: Path, runs: int) -> dict[str, float]:
    """Median wall time (s) of each start-up case."""
    cases = {
        "--help": [QCTL, "--help"],
        "validate": [QCTL, "validate", EXAMPLE],
        "list": [QCTL, "list", "--state-dir", str(state)],
    }
    medians = {}
    for name, argv in cases.items():
        wall(argv)  # warm-up
        medians[name] = statistics.median(wall(argv) for _ in range(runs))
    return medians


async def awall(argv: list[str]) -> float:
    return await asyncio.to_thread(wall, argv)


async def startup_table(state: Path, runs: int) -> bool:
    """Print the start-up table (``list`` sees the running guest); True when every target
    is met."""
    ok = True
    load = os.getloadavg()[0]
    print(f"qctl start-up: median wall time of {runs} runs after a warm-up")
    print(f"  (load average {load:.1f} on {os.cpu_count()} CPUs: other work inflates these)")
    for name, seconds in (await asyncio.to_thread(startup, state, runs)).items():
        met = seconds * 1000 <= TARGETS_MS[name]
        ok = ok and met
        print(
            f"  qctl {name:<10} {seconds * 1000:8.1f} ms   "
            f"(target <= {TARGETS_MS[name]:.0f} ms) {'ok' if met else 'MISSED'}",
            flush=True,
        )
    return ok


async def qctl_cycle(work: Path, state: Path, console: Console, cycle: int) -> float:
    """One ``qctl attach-device`` + ``detach-device`` of a new NIC: wall time (s), each step
    settled on the guest's console (untimed)."""
    mac = mac_for(1, cycle)
    nic = work / f"nic-{cycle}.xml"
    nic.write_text(interface_xml(mac))
    attach = await awall([QCTL, "attach-device", NAME, str(nic), "--state-dir", str(state)])
    await console.seen(mac)
    detach = await awall(
        [QCTL, "detach-device", NAME, str(nic), "--wait", "30", "--state-dir", str(state)]
    )
    await console.gone(mac)
    return attach + detach


async def virsh_cycle(libvirt: Libvirt, cycle: int) -> float:
    """The same through ``virsh attach-device`` + ``detach-device`` on libvirt's guest."""
    mac = mac_for(4, cycle)
    attach = await libvirt.cli("attach", mac)
    await libvirt.console.seen(mac)
    detach = await libvirt.cli("detach", mac)
    await libvirt.console.gone(mac)
    return attach + detach


async def cycles(
    work: Path, state: Path, console: Console, libvirt: Libvirt | None, count: int
) -> list[tuple[float, float | None]]:
    """``count`` timed cycles after a warm-up one: (qctl, virsh) wall times, the two taken in
    turn, qctl first in one pair and second in the next, so that neither a drift in the
    machine's speed nor going first favours a side."""
    pairs: list[tuple[float, float | None]] = []
    for cycle in range(count + 1):  # the first is the warm-up
        if libvirt is None:
            ours, theirs = await qctl_cycle(work, state, console, cycle), None
        elif cycle % 2:
            ours = await qctl_cycle(work, state, console, cycle)
            theirs = await virsh_cycle(libvirt, cycle)
        else:
            theirs = await virsh_cycle(libvirt, cycle)
            ours = await qctl_cycle(work, state, console, cycle)
        if cycle:
            pairs.append((ours, theirs))
    return pairs


def install_libvirt() -> None:
    """apt-get libvirt if missing, then set what the bench's private libvirtd needs (QEMU as
    root with stdio to files, no autostarted default network), as ``scripts/bench hotplug``
    checks."""
    if shutil.which("virsh") is None:
        say(f"installing {' '.join(LIBVIRT_PACKAGES)} with apt-get")
        apt = ["env", "DEBIAN_FRONTEND=noninteractive", "apt-get"]
        run([*apt, "update", "-qq"])
        run([*apt, "install", "-y", "-qq", "--no-install-recommends", *LIBVIRT_PACKAGES])
    conf = Path("/etc/libvirt/qemu.conf")
    text = conf.read_text() if conf.exists() else ""
    wanted = {"user": '"root"', "group": '"root"', "stdio_handler": '"file"'}
    missing = [f"{k} = {v}" for k, v in wanted.items() if f"\n{k} = {v}\n" not in text]
    if missing:
        say(f"setting {', '.join(missing)} in {conf}")
        lines = "\n".join(["# scripts/bench cli --install-libvirt", *missing])
        conf.write_text(f"{text}\n{lines}\n")
    default = Path("/etc/libvirt/qemu/networks/autostart/default.xml")
    if default.is_symlink() or default.exists():
        say(f"removing {default} (the bench's libvirtd must not start networks)")
        default.unlink()


async def bench(args: argparse.Namespace) -> bool:
    reason = "skipped (--no-libvirt)" if args.no_libvirt else libvirt_unavailable()
    work = Path(tempfile.mkdtemp(prefix="qctl-bench-cli-", dir=tmpfs_dir()))
    try:
        run(["ip", "link", "add", BRIDGE, "type", "bridge"])
        try:
            return await measure(work, args, reason)
        finally:
            run(["ip", "link", "del", BRIDGE], check=False)
    finally:
        shutil.rmtree(work, ignore_errors=True)


async def measure(work: Path, args: argparse.Namespace, reason: str | None) -> bool:
    """Boot qctl's guest (and libvirt's, when there is libvirt), print the tables; each
    guest is stopped however this ends."""
    state = work / "state"
    console = Console(work / "serial.log")
    domain = work / "domain.xml"
    domain.write_text(domain_xml(console.path))
    run(["ip", "link", "set", BRIDGE, "up"])
    await awall([QCTL, "start", str(domain), "--state-dir", str(state)])
    try:
        await console.booted()
        ok = await startup_table(state, args.runs)
        libvirt = None if reason is not None else Libvirt(work)
        try:
            if libvirt is not None:
                await libvirt.start()
                say(f"guest up under libvirt {libvirt.version}; timing qctl and virsh in turn")
            else:
                say("timing attach-device + detach-device")
            pairs = await cycles(work, state, console, libvirt, args.cycles)
        finally:
            if libvirt is not None:
                await libvirt.aclose()
    finally:
        stop = [QCTL, "stop", NAME, "--force", "--state-dir", str(state)]
        stopped = await asyncio.to_thread(subprocess.run, stop, capture_output=True, text=True)
        if stopped.returncode != 0:
            say(f"qctl stop failed, QEMU may still run: {stopped.stderr.strip()}")
    print(f"\nattach-device + detach-device, median of {args.cycles} cycles after a warm-up")
    print(f"  qctl   {statistics.median(q for q, _ in pairs) * 1000:8.1f} ms")
    if libvirt is not None:
        theirs = [v for _, v in pairs if v is not None]
        ratio = statistics.median(q / v for q, v in pairs if v is not None)
        met = ratio <= MAX_RATIO
        ok = ok and met
        print(f"  virsh  {statistics.median(theirs) * 1000:8.1f} ms")
        print(
            f"  qctl/virsh = {ratio:.2f}, the median of the {len(theirs)} pairs' ratios "
            f"(target <= {MAX_RATIO}) {'ok' if met else 'MISSED'}"
        )
    else:
        installed = shutil.which("virsh") is not None
        print(f"  virsh  {f'not judged: {reason}' if installed else 'virsh not installed'}")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=11, help=f"runs per command (>= {MIN_RUNS})")
    parser.add_argument("--cycles", type=int, default=9, help="timed attach+detach cycles")
    parser.add_argument("--install-libvirt", action="store_true", help="apt-get libvirt first")
    parser.add_argument("--no-libvirt", action="store_true", help="leave virsh out")
    args = parser.parse_args()
    if args.runs < MIN_RUNS or args.cycles < 1:
        parser.error(f"--runs must be at least {MIN_RUNS}, --cycles at least 1")
    if not (GUEST / "initrd.img").is_file():
        sys.exit("bench cli: no test guest in .cache/guest; run ./scripts/bootstrap")
    if not in_private_netns():
        if args.install_libvirt:  # once, before entering the private namespace
            install_libvirt()
        reexec_in_private_netns()
    try:
        ok = asyncio.run(bench(args))
    except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
        say(f"failed: {exc}")
        return 1
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
