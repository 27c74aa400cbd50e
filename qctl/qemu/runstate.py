"""QEMU's run state as qctl shows it: running, paused, migrating, shut down, crashed, gone.

QEMU reports about twenty fine-grained states (``query-status``); a user acting on a domain
needs to know a handful of things: whether the vCPUs run, whether the guest can answer an
ACPI power-down, whether this is a migration's source or destination. :func:`from_status`
folds QEMU's states into :class:`RunState`, and :func:`after_event` follows the events
that change it (STOP, RESUME, SHUTDOWN, GUEST_PANICKED, MIGRATION).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any

__all__ = ["RunState", "after_event", "from_status"]


class RunState(enum.StrEnum):
    """Where a domain's QEMU stands."""

    RUNNING = "running"
    #: vCPUs stopped: by ``suspend``, before the first ``cont``, or on an I/O error
    PAUSED = "paused"
    #: a migration's destination, waiting for (or receiving) the guest
    INMIGRATE = "inmigrate"
    #: a migration's source after the guest left: only ``quit`` is left to do
    POSTMIGRATE = "postmigrate"
    SHUTDOWN = "shutdown"
    CRASHED = "crashed"
    #: QEMU has exited
    SHUTOFF = "shutoff"

    @property
    def guest_can_answer(self) -> bool:
        """Whether a guest could answer an ACPI power-down now (its vCPUs run)."""
        return self is RunState.RUNNING


_FROM_QEMU: dict[str, RunState] = {
    "running": RunState.RUNNING,
    "inmigrate": RunState.INMIGRATE,
    "postmigrate": RunState.POSTMIGRATE,
    "shutdown": RunState.SHUTDOWN,
    "guest-panicked": RunState.CRASHED,
    "internal-error": RunState.CRASHED,
}


def from_status(status: str) -> RunState:
    """The run state of QEMU's ``query-status`` ``status`` (every state in which the vCPUs
    stand still and can be resumed — prelaunch, paused, io-error, watchdog, … — is paused)."""
    return _FROM_QEMU.get(status, RunState.PAUSED)


def after_event(state: RunState, name: str, data: Mapping[str, Any]) -> RunState:
    """The run state after QEMU's event ``name`` with ``data`` (unchanged for events that do
    not move it)."""
    if name == "RESUME":
        return RunState.RUNNING
    if name == "STOP":
        # A source stops its vCPUs at the end of a migration; it stays postmigrate.
        return state if state is RunState.POSTMIGRATE else RunState.PAUSED
    if name == "SHUTDOWN":
        return RunState.SHUTDOWN
    if name == "GUEST_PANICKED":
        return RunState.CRASHED
    completed = name == "MIGRATION" and data.get("status") == "completed"
    if completed and state is not RunState.INMIGRATE:
        return RunState.POSTMIGRATE
    return state
