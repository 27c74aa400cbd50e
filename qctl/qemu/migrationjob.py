"""Live migration as a job of the driver: the outgoing side of a running domain, and the
incoming side that becomes one.

The protocol — capabilities, following UNPLUG_PRIMARY / ``wait-unplug`` / passes to
completion, cancelling — is :mod:`qctl.qemu.migration`'s; this module makes it a job of a
:class:`~qctl.qemu.runtime.DomainRuntime`:

* ``migrate`` holds the domain's job (visible to ``qctl job``, abortable with ``qctl
  job-abort`` or ``qctl migrate-cancel`` from any process) and records its progress; once
  QEMU reports ``completed`` the source, now ``postmigrate``, is quit at once (no ACPI: no
  guest is left to answer) and everything the ledger held is released by the ledger's own
  release: VF settings and drivers restored, taps deleted, pool devices returned. On
  failure or abort the source keeps running, QEMU re-plugs its primaries, and the books
  are as they were.
* ``receive`` runs on a runtime started with ``-incoming defer`` (state ``inmigrate``): it
  sets the same capabilities, listens, waits for the guest and resumes it. On failure the
  caller removes the destination, which leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from qctl.errors import QMPError
from qctl.qemu.migration import (
    MIGRATION_EVENTS,
    MigrationOutcome,
    MigrationProgress,
    ProgressSink,
    check_outgoing,
    migrate_in,
    migrate_out,
)
from qctl.qemu.runstate import RunState
from qctl.qemu.runtime import DomainRuntime

__all__ = ["migrate", "receive"]

log = logging.getLogger(__name__)

#: how long a migrated-away source may take to quit before it is killed
_QUIT_TIMEOUT = 5.0


def describe(progress: MigrationProgress) -> str:
    """One line for ``qctl job``: status, RAM moved, pass, expected downtime."""
    mib = 1024 * 1024
    moved = f"{progress.transferred // mib}/{progress.total // mib} MiB" if progress.total else ""
    parts = [progress.status, moved, f"pass {progress.passes}" if progress.passes else ""]
    if progress.unplugged:
        parts.append("primaries unplugged: " + ", ".join(progress.unplugged))
    return ", ".join(part for part in parts if part)


async def migrate(
    rt: DomainRuntime,
    uri: str,
    *,
    timeout: float | None = None,  # noqa: ASYNC109 - the whole migration's bound
    bandwidth: int | None = None,
    downtime_ms: int | None = None,
    progress: ProgressSink | None = None,
    say: Callable[[str], None] | None = None,
) -> MigrationOutcome:
    """Migrate ``rt``'s guest to ``uri`` as the domain's job (see the module)."""

    def tell(line: str) -> None:  # check_outgoing has logged it
        if say is not None:
            say(line)

    def sink(seen: MigrationProgress) -> None:
        rt.note_progress(describe(seen))
        if progress is not None:
            progress(seen)

    async with rt.job("migrate"):
        await rt.announce_job()
        for warning in await check_outgoing(rt.monitor, rt.live, rt.ledger):
            tell(warning)
        with rt.client.events(MIGRATION_EVENTS) as events:
            return await migrate_out(
                rt.monitor,
                events,
                uri,
                timeout=timeout,
                bandwidth=bandwidth,
                downtime_ms=downtime_ms,
                progress=sink,
                release_source=lambda: _end_source(rt),
            )


async def _end_source(rt: DomainRuntime) -> None:
    """The guest runs on the destination: quit the ``postmigrate`` source and release."""
    rt.set_state(RunState.POSTMIGRATE)
    with contextlib.suppress(QMPError, TimeoutError):
        async with asyncio.timeout(_QUIT_TIMEOUT):
            await rt.monitor.quit()
            await rt.process.wait()
    if rt.running:
        await rt.process.stop(grace=1.0)
    await rt.release()


async def receive(
    rt: DomainRuntime,
    listen_uri: str,
    *,
    timeout: float | None = None,  # noqa: ASYNC109 - the whole migration's bound
    ready: Callable[[], None] | None = None,
) -> None:
    """Receive the guest on ``listen_uri`` into ``rt`` (started ``-incoming defer``) as the
    domain's job, then resume it."""
    rt.set_state(RunState.INMIGRATE)
    async with rt.job("incoming"):
        await rt.announce_job()
        with rt.client.events(MIGRATION_EVENTS) as events:
            await migrate_in(rt.monitor, events, listen_uri, timeout=timeout, ready=ready)
        rt.set_state(RunState.RUNNING)
