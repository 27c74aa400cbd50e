"""Benchmark of the capabilities probe: ``scripts/bench caps [--runs N] [--binary PATH]``.

Measures side by side, in one process:

- hand-written: the minimal qemu.qmp script doing the same job by hand — spawn QEMU with the
  probe's command line, connect (retrying until QEMU listens), run the probe's queries one after the
  other, quit, wait for the exit, remove the temporary directory;
- cold: ``CapsCache(empty directory).get(binary)`` — spawn, concurrent queries, stop, write
  the cache entry;
- cached: ``CapsCache(warm directory).get(binary)`` from a new cache object each time: every
  lookup checks the binary's fingerprint, the entry file's stamp and the host facts, and
  returns the caps object the process already shares (the first lookup read the file).

Hand-written and cold runs alternate, after one warm-up each. Prints the medians and the
ratios, and exits 1 when cold/hand-written exceeds 1.3 or cold/cached is below 50.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable

from qemu.qmp import ConnectError, ExecuteError, QMPClient

from qctl.caps import PROBED_DEVICES, CapsCache, resolve_binary

MAX_COLD_OVER_HAND = 1.3
MIN_COLD_OVER_CACHED = 50.0
#: how long the hand-written script waits for QEMU to listen on its monitor
CONNECT_LIMIT = 10.0


async def hand_written(binary: str) -> None:
    """The minimal qemu.qmp script: same QEMU, same queries, sequentially.

    QEMU creates its socket (bind) a moment before it listens, so connecting as soon as the
    file appears can be refused: the script retries until QEMU listens, and gives up if
    QEMU exits. Whatever happens, no QEMU and no directory is left behind.
    """
    workdir = tempfile.mkdtemp()
    sock = os.path.join(workdir, "qmp.sock")
    proc = await asyncio.create_subprocess_exec(
        binary, "-S", "-no-user-config", "-nodefaults", "-nographic",
        "-machine", "none,accel=kvm:tcg", "-qmp", f"unix:{sock},server=on,wait=off",
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        qmp = await connect_when_listening(sock, proc)
        await qmp.execute("query-version")
        await qmp.execute("query-commands")
        with contextlib.suppress(ExecuteError):  # removed in QEMU 6.0; the probe asks anyway
            await qmp.execute("query-events")
        types = await qmp.execute("qom-list-types")
        names = {t["name"] for t in types}  # type: ignore[attr-defined]
        for device in PROBED_DEVICES:
            if device in names:
                await qmp.execute("device-list-properties", {"typename": device})
        await qmp.execute("query-qmp-schema")
        await qmp.execute("query-machines")
        await qmp.execute("query-kvm")
        await qmp.execute("quit")
        with contextlib.suppress(EOFError):  # qemu.qmp reports the EOF after quit
            await qmp.disconnect()
        await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)


async def connect_when_listening(sock: str, proc: asyncio.subprocess.Process) -> QMPClient:
    """Connect to QEMU's monitor, retrying while the socket is absent or not listening yet."""
    deadline = time.monotonic() + CONNECT_LIMIT
    while True:
        qmp = QMPClient("bench")
        try:
            await qmp.connect(sock)
            return qmp
        except ConnectError as exc:
            if not isinstance(exc.exc, (FileNotFoundError, ConnectionRefusedError)):
                raise
            if proc.returncode is not None:
                raise RuntimeError(f"QEMU exited with status {proc.returncode}") from exc
            if time.monotonic() > deadline:
                raise RuntimeError(f"QEMU did not listen within {CONNECT_LIMIT}s") from exc
        await asyncio.sleep(0.001)


async def timed(action: Callable[[], Awaitable[object]]) -> float:
    start = time.perf_counter()
    await action()
    return time.perf_counter() - start


async def bench(binary: str, runs: int, lookups: int) -> bool:
    with tempfile.TemporaryDirectory() as scratch:

        async def cold() -> None:
            directory = tempfile.mkdtemp(dir=scratch)
            await CapsCache(directory).get(binary)

        await hand_written(binary)  # warm-up: page cache, first-run costs
        await cold()
        hand_times, cold_times = [], []
        for _ in range(runs):
            hand_times.append(await timed(lambda: hand_written(binary)))
            cold_times.append(await timed(cold))

        warm = os.path.join(scratch, "warm")
        await CapsCache(warm).get(binary)
        cached_times = [await timed(lambda: CapsCache(warm).get(binary)) for _ in range(lookups)]

    hand, cold_median = statistics.median(hand_times), statistics.median(cold_times)
    cached = statistics.median(cached_times)
    over_hand, over_cached = cold_median / hand, cold_median / cached
    print(f"binary: {binary}; {runs} runs each, {lookups} cached lookups")
    print(f"hand-written qemu.qmp script  median {hand * 1000:8.2f} ms")
    print(f"cold probe (CapsCache, empty) median {cold_median * 1000:8.2f} ms")
    print(f"cached lookup                 median {cached * 1000:8.3f} ms")
    ok_hand = over_hand <= MAX_COLD_OVER_HAND
    ok_cached = over_cached >= MIN_COLD_OVER_CACHED
    verdict = {True: "ok", False: "MISSED"}
    print(
        f"cold / hand-written = {over_hand:.2f}  (target <= {MAX_COLD_OVER_HAND}) "
        f"{verdict[ok_hand]}"
    )
    print(
        f"cold / cached       = {over_cached:.0f}  (target >= {MIN_COLD_OVER_CACHED:.0f}) "
        f"{verdict[ok_cached]}"
    )
    return ok_hand and ok_cached


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--binary", default=os.environ.get("QCTL_QEMU", "qemu-system-x86_64"))
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--lookups", type=int, default=200)
    args = parser.parse_args()
    ok = asyncio.run(bench(resolve_binary(args.binary), args.runs, args.lookups))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
