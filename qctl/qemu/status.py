"""The status file: what a later qctl process needs to take over a running domain.

It holds the QEMU process's identity (pid and start time), the binary, the definition as
given, a snapshot of the live XML, the ledger, QEMU's run state as last seen, and the job
under way (if any), so queries answer from the file alone without waiting for the job.
The snapshot may lag behind the ledger (see :func:`~qctl.qemu.devices.merge_live`);
reading the file gives the current live definition. :func:`write_status` replaces it
atomically; :func:`read_status` rebuilds the values or raises :class:`StateError` naming
the file.
"""

from __future__ import annotations

from dataclasses import dataclass

from qctl.conf import DomainDef, format_xml, parse_domain
from qctl.errors import QctlError, StateError
from qctl.qemu.devices import merge_live
from qctl.qemu.ledger import Ledger
from qctl.qemu.process import ProcessIdentity
from qctl.qemu.runstate import RunState
from qctl.qemu.state import DomainDir
from qctl.qemu.txn import JobRecord

__all__ = ["STATUS_VERSION", "Status", "read_status", "write_status"]

STATUS_VERSION = 1


@dataclass(slots=True)
class Status:
    """The content of a domain's status file."""

    identity: ProcessIdentity
    binary: str
    config: DomainDef
    live: DomainDef
    ledger: Ledger
    state: RunState = RunState.RUNNING
    job: JobRecord | None = None


def write_status(
    directory: DomainDir,
    status: Status,
    *,
    config_xml: str | None = None,
    live_xml: str | None = None,
    durable: bool = True,
) -> None:
    """Atomically replace the domain's status file.

    ``config_xml`` and ``live_xml`` may be given already rendered: a running domain writes
    its status at every hot-plug step, and the definitions change far less often.
    ``durable=False`` skips the fsync, for changes a crash may lose (a job record: its
    owner's death shows it is over).
    """
    directory.write_status(
        {
            "version": STATUS_VERSION,
            "name": status.live.name,
            "pid": status.identity.pid,
            "start_time": status.identity.start_time,
            "binary": status.binary,
            "config_xml": config_xml if config_xml is not None else format_xml(status.config),
            "live_xml": live_xml if live_xml is not None else format_xml(status.live),
            "ledger": status.ledger.to_json(),
            "state": status.state.value,
            "job": status.job.to_json() if status.job is not None else None,
        },
        durable=durable,
    )


def read_status(directory: DomainDir) -> Status:
    """The domain's status; StateError when the file is missing or damaged."""
    data = directory.read_status()
    source = str(directory.status_file)
    try:
        ledger = Ledger.from_json(data["ledger"])
        if data.get("version") != STATUS_VERSION:
            raise ValueError(f"unknown status version {data.get('version')!r}")
        return Status(
            identity=ProcessIdentity(int(data["pid"]), int(data["start_time"])),
            binary=str(data["binary"]),
            config=parse_domain(data["config_xml"], source=source),
            live=merge_live(
                parse_domain(data["live_xml"], source=source, live=True), ledger
            ),
            ledger=ledger,
            state=RunState(data.get("state", RunState.RUNNING.value)),
            job=JobRecord.from_json(data["job"]) if data.get("job") is not None else None,
        )
    except (KeyError, TypeError, ValueError, AttributeError, QctlError) as exc:
        raise StateError(f"status file {source} is damaged: {exc}") from exc
