"""What cross-domain lookups read of a status file — the process, the ledger, the run state
and the job — without parsing any XML, so ``qctl list`` and the device claims pay neither
for lxml nor for the definitions (:mod:`~qctl.qemu.status` reads the whole file)."""

from __future__ import annotations

from typing import Any

from qctl.errors import StateError
from qctl.qemu.ledger import Ledger
from qctl.qemu.process import ProcessIdentity
from qctl.qemu.runstate import RunState
from qctl.qemu.state import DomainDir
from qctl.qemu.txn import JobRecord
from qctl.record import record

__all__ = ["STATUS_VERSION", "StatusSummary", "read_summary", "summary_of"]

STATUS_VERSION = 1


@record
class StatusSummary:
    """What cross-domain lookups need of a status file, read without parsing any XML."""

    identity: ProcessIdentity
    ledger: Ledger
    state: RunState
    job: JobRecord | None


def read_summary(directory: DomainDir) -> StatusSummary:
    """The domain's process, ledger, run state and job; StateError when missing or damaged."""
    data = directory.read_status()
    try:
        return summary_of(data)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise StateError(f"status file {directory.status_file} is damaged: {exc}") from exc


def summary_of(data: dict[str, Any]) -> StatusSummary:
    if data.get("version") != STATUS_VERSION:
        raise ValueError(f"unknown status version {data.get('version')!r}")
    return StatusSummary(
        identity=ProcessIdentity(int(data["pid"]), int(data["start_time"])),
        ledger=Ledger.from_json(data["ledger"]),
        state=RunState(data.get("state", RunState.RUNNING.value)),
        job=JobRecord.from_json(data["job"]) if data.get("job") is not None else None,
    )
