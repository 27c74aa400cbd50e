"""Stopping, pausing and resuming a domain: jobs on its run state.

``stop`` is graceful only where a guest can answer: an ACPI power-down goes to a guest whose
vCPUs run and which has shown a driver (a virtio device set up, where QEMU can tell). A
paused, migrated-away (``postmigrate``) or not yet booted guest cannot answer, so QEMU is
told to ``quit`` at once instead of waiting out the grace. Every step is said through
``say`` (the CLI prints it on stderr) and logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from qctl.errors import QMPError
from qctl.qemu.runstate import RunState, from_status
from qctl.qemu.runtime import DomainRuntime

__all__ = ["Say", "resume", "stop", "suspend"]

log = logging.getLogger(__name__)

#: receives one line per step a long operation takes
Say = Callable[[str], None]
#: how long ``quit`` may take before QEMU is killed
_QUIT_TIMEOUT = 5.0


def _quiet(line: str) -> None:
    del line


async def _why_not_graceful(rt: DomainRuntime) -> str | None:
    """None when a guest may answer ACPI; else why it cannot."""
    state = from_status(await rt.monitor.status())
    rt.set_state(state)
    if not state.guest_can_answer:
        return f"the domain is {state.value}"
    if await rt.monitor.guest_drivers_ready() is False:
        return "the guest has not booted (no driver answered yet)"
    return None


async def stop(
    rt: DomainRuntime, *, force: bool = False, grace: float = 30.0, say: Say = _quiet
) -> None:
    """Stop QEMU and release everything it held (see the module). Idempotent."""

    def tell(line: str) -> None:
        log.info("domain %s: %s", rt.name, line)
        say(line)

    if rt.released:
        return
    async with rt.job("stop"):
        await rt.announce_job()
        if rt.running and not force:
            reason: str | None = "QEMU does not answer"
            with contextlib.suppress(QMPError):
                reason = await _why_not_graceful(rt)
            if reason is None:
                tell(f"asking the guest to power down ({grace:g} s)…")
                try:
                    await rt.monitor.powerdown()
                    async with asyncio.timeout(grace):
                        await rt.process.wait()
                except (QMPError, TimeoutError):
                    tell("the guest did not answer; quitting")
            else:
                tell(f"{reason}: quitting at once")
        if rt.running:
            with contextlib.suppress(QMPError, TimeoutError):
                async with asyncio.timeout(_QUIT_TIMEOUT):
                    await rt.monitor.quit()
                    await rt.process.wait()
        if rt.running:
            tell("QEMU did not quit; killed")
            await rt.process.stop(grace=1.0)
        await rt.release()


async def suspend(rt: DomainRuntime) -> None:
    """Pause the vCPUs (``virsh suspend``)."""
    async with rt.job("suspend"):
        await rt.monitor.pause()
        rt.set_state(RunState.PAUSED)
        await rt.save()


async def resume(rt: DomainRuntime) -> None:
    """Run the vCPUs again (``virsh resume``)."""
    async with rt.job("resume"):
        await rt.monitor.resume()
        rt.set_state(RunState.RUNNING)
        await rt.save()
