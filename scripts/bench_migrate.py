"""Benchmark of a failover live migration: ``scripts/bench migrate [--cycles N]``.

The two-host rig of the tests (``tests/twohost.py``: two network namespaces joined by a
veth pair, 192.0.2.1 and .2, a bridge ``br0`` on each) carries the bundled guest (TCG, q35)
with a virtio standby and an e1000e standing in for the VF, both on ``br0``. Each cycle
starts the guest on host A (QEMU 7.2) with qctl, waits for the failover trio, then times
the migration done by one of:

- qctl: ``Domain.incoming`` on B (the definition from ``migratable_xml()``, B's own taps)
  and ``Domain.migrate`` on A, which quits the source and releases its host side; the time
  runs from B listening to both calls returned;
- hand-written: qctl starts the destination QEMU on B (``-incoming defer``), then a
  qemu.qmp client on each QEMU's spare monitor does the same QMP steps:
  ``migrate-set-capabilities`` (events) on both, ``migrate-incoming``, ``migrate``, wait for
  MIGRATION ``completed`` on both sides, ``cont`` on B, ``quit`` A and wait for it to exit;
  the time runs from the first command on B to the source gone and B running;
- qctl 7.2->10.0 (when ``scripts/fetch-qemu`` unpacked QEMU 10.0): as qctl, the
  destination run by QEMU 10.0 on the source's resolved machine type ``pc-q35-7.2``.

Also timed: from the same start to the guest reporting its primary again on B's serial
console. The tools alternate (q h, h q, …). Prints the medians and the ratio
qctl/hand-written (both 7.2->7.2); exits 1 when it exceeds 1.1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from bench_hotplug import NETNS_MARK, in_private_netns  # noqa: E402
from qemu.qmp import EventListener, QMPClient  # noqa: E402
from support import QEMU_VERSIONS, guest_domain_xml, unique, when_listening  # noqa: E402
from twohost import FAILOVER_DEVICES as DEVICES  # noqa: E402
from twohost import FAILOVER_MAC as MAC  # noqa: E402
from twohost import TwoHosts  # noqa: E402

import qctl  # noqa: E402
from qctl.conf import DomainDef, SerialDef  # noqa: E402
from qctl.qemu.hostpaths import HostPaths  # noqa: E402
from qctl.qemu.migratable import migratable_definition  # noqa: E402
from qctl.qemu.process import Launcher  # noqa: E402
from qctl.qemu.startup import Launched, launch  # noqa: E402
from qctl.qemu.state import StateRoot  # noqa: E402

TARGET = 1.1
TIMEOUT = 120.0
NEWER = Path(QEMU_VERSIONS["qemu10.0"])
PORT = 49152


def say(text: str) -> None:
    print(f"bench migrate: {text}", file=sys.stderr, flush=True)


def trio(console: Path) -> bool:
    """The guest's latest NIC report shows master, standby and primary of the pair."""
    text = console.read_text(errors="replace") if console.exists() else ""
    lines = [line for line in text[: text.rfind("\n") + 1].splitlines() if "QCTL-NICS:" in line]
    if not lines:
        return False
    drivers = sorted(e.split(",")[1] for e in lines[-1].split()[1:] if e.endswith(MAC))
    return drivers == ["e1000e", "virtio_net", "virtio_net"]


async def wait_trio(console: Path, timeout: float = 90) -> None:  # noqa: ASYNC109
    async with asyncio.timeout(timeout):
        while not trio(console):  # noqa: ASYNC110 - the guest writes a file; nothing to await
            await asyncio.sleep(0.02)


def on_console(defn: DomainDef, console: Path) -> DomainDef:
    items = tuple(
        dataclasses.replace(i, source_path=str(console)) if isinstance(i, SerialDef) else i
        for i in defn.devices.items
    )
    return dataclasses.replace(defn, devices=dataclasses.replace(defn.devices, items=items))


async def completed(listener: EventListener) -> None:
    async for event in listener:
        status = event["data"]["status"]  # type: ignore[index]  # QMP's JSON
        if status in ("completed", "failed", "cancelled"):
            assert status == "completed", event
            return


async def by_hand(rig: TwoHosts, source: qctl.Domain, target: Launched) -> None:
    uri = f"tcp:{rig.b.address}:{PORT}"
    src, dst = QMPClient("src"), QMPClient("dst")
    await src.connect(str(source.directory.qmp_sockets[-1]))
    await dst.connect(str(target.directory.qmp_sockets[-1]))
    caps = {"capabilities": [{"capability": "events", "state": True}]}
    try:
        with src.listener("MIGRATION") as src_events, dst.listener("MIGRATION") as dst_events:
            await dst.execute("migrate-set-capabilities", caps)
            await dst.execute("migrate-incoming", {"uri": uri})
            await src.execute("migrate-set-capabilities", caps)
            await src.execute("migrate", {"uri": uri})
            await completed(src_events)
            await completed(dst_events)
        await dst.execute("cont")
        with contextlib.suppress(Exception):  # the EOF of a QEMU that quits
            await src.execute("quit")
        await source.process.wait()
    finally:
        for client in (src, dst):
            with contextlib.suppress(Exception):  # qemu.qmp re-raises the EOF after quit
                await client.disconnect()


async def listening(rig: TwoHosts, defn: DomainDef, uri: str) -> asyncio.Future[qctl.Domain]:
    """``Domain.incoming`` on host B, returned once QEMU listens there."""
    with rig.b.entered():  # until QEMU listens: its taps are made in B
        return await when_listening(
            lambda ready: qctl.Domain.incoming(
                defn, uri, state_root=rig.b.state_root, timeout=TIMEOUT, ready=ready
            )
        )


async def migrate_qctl(
    rig: TwoHosts, source: qctl.Domain, console_b: Path, emulator: str | None
) -> tuple[qctl.Domain, float, float]:
    """The qctl way: the destination from the migratable XML, then ``migrate``; returns
    the destination and the monotonic times the timed part started and ended."""
    uri = f"tcp:{rig.b.address}:{PORT}"
    travelling = on_console(qctl.parse_domain(source.migratable_xml(), live=True), console_b)
    if emulator is not None:
        devices = dataclasses.replace(travelling.devices, emulator=emulator)
        travelling = dataclasses.replace(travelling, devices=devices)
    arriving = await listening(rig, travelling, uri)
    started = time.monotonic()
    with rig.a.entered():
        await source.migrate(uri, timeout=TIMEOUT)
    destination = await arriving
    return destination, started, time.monotonic()


async def migrate_hand(
    rig: TwoHosts, source: qctl.Domain, console_b: Path
) -> tuple[qctl.Domain, float, float]:
    """The hand-written way on a destination QEMU qctl started (returns as
    :func:`migrate_qctl`; taking the destination over is not timed)."""
    travelling = migratable_definition(source.live, source.config, source.ledger)
    with rig.b.entered():
        target = await launch(
            on_console(travelling, console_b),
            await source.capabilities(),
            source.runtime.binary,
            StateRoot(rig.b.state_root),
            None,
            HostPaths(),
            Launcher(),
            incoming=True,
        )
    started = time.monotonic()
    await by_hand(rig, source, target)
    ended = time.monotonic()
    await target.client.aclose()
    with rig.b.entered():
        destination = await qctl.Domain.connect(source.name, state_root=rig.b.state_root)
    return destination, started, ended


async def cycle(rig: TwoHosts, tool: str, base: Path) -> tuple[float, float]:
    console_a, console_b = base / f"{tool}-a.log", base / f"{tool}-b.log"
    for console in (console_a, console_b):
        console.unlink(missing_ok=True)
    defn = qctl.parse_domain(guest_domain_xml(unique("bm"), DEVICES, console=console_a))
    with rig.a.entered():
        source = await qctl.Domain.start(defn, state_root=rig.a.state_root)
    destination: qctl.Domain | None = None
    try:
        await wait_trio(console_a)
        if tool == "hand":
            destination, started, ended = await migrate_hand(rig, source, console_b)
        else:
            emulator = str(NEWER) if tool == "qctl-10.0" else None
            destination, started, ended = await migrate_qctl(rig, source, console_b, emulator)
        migrated = ended - started
        await wait_trio(console_b)
        primary = time.monotonic() - started
        return migrated, primary
    finally:
        with rig.a.entered():
            await source.stop(force=True)
        if destination is not None:
            with rig.b.entered():
                await destination.stop(force=True)


async def bench(cycles: int, newer: bool) -> bool:
    tools = ["qctl", "hand"] + (["qctl-10.0"] if newer else [])
    with tempfile.TemporaryDirectory(prefix="qctl-bench-migrate-") as tmp:
        base = Path(tmp)
        rig = TwoHosts(base)
        try:
            times: dict[str, list[tuple[float, float]]] = {tool: [] for tool in tools}
            for index in range(cycles):
                order = tools if index % 2 == 0 else [tools[1], tools[0], *tools[2:]]
                for tool in order:
                    result = await cycle(rig, tool, base)
                    times[tool].append(result)
                    say(f"cycle {index + 1} {tool}: migrate {result[0]:.3f}s, "
                        f"primary on B {result[1]:.3f}s")  # fmt: skip
        finally:
            rig.close()
    medians = {
        tool: (statistics.median(m for m, _ in got), statistics.median(p for _, p in got))
        for tool, got in times.items()
    }
    labels = {"qctl": "qctl", "hand": "hand-written", "qctl-10.0": "qctl 7.2->10.0"}
    print(f"{'tool':<16}{'migrate (median)':>18}{'primary on B (median)':>24}")
    for tool in tools:
        print(f"{labels[tool]:<16}{medians[tool][0]:>17.3f}s{medians[tool][1]:>23.3f}s")
    ratio = medians["qctl"][0] / medians["hand"][0]
    print(f"ratio qctl/hand-written (migrate, 7.2->7.2): {ratio:.2f} (target <= {TARGET})")
    return ratio <= TARGET


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=3, help="timed cycles per tool")
    args = parser.parse_args()
    if args.cycles < 1:
        parser.error("--cycles must be at least 1")
    if not (REPO / ".cache" / "guest" / "initrd.img").is_file():
        sys.exit("bench migrate: no test guest in .cache/guest; run ./scripts/bootstrap")
    if not in_private_netns():  # run again in a network namespace of its own
        setup = f'ip link set lo up && export {NETNS_MARK}=$(stat -L -c %i /proc/self/ns/net)'
        os.execvp(
            "unshare",
            ["unshare", "--net", "--", "sh", "-c", f'{setup} && exec "$@"', "sh",
             sys.executable, os.path.abspath(__file__), *sys.argv[1:]],
        )  # fmt: skip
    try:
        newer = NEWER.is_file()
        if not newer:
            say(f"{NEWER} not found (scripts/fetch-qemu): no 7.2->10.0 row")
        return 0 if asyncio.run(bench(args.cycles, newer)) else 1
    except KeyboardInterrupt:
        say("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
