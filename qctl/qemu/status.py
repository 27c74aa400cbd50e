"""The status file: what a later qctl process needs to take over a running domain.

It holds the QEMU process's identity (pid and start time), the binary, the definition as
given, a snapshot of the live XML, the ledger, QEMU's run state as last seen, and the job
under way (if any), so queries answer from the file alone without waiting for the job.
The snapshot may lag behind the ledger (see :func:`~qctl.qemu.devices.merge_live`);
reading the file gives the current live definition. :func:`write_status` replaces it
atomically; a running domain's hot-plug steps go to its journal (:mod:`~qctl.qemu.journal`,
through :meth:`StatusRenderer.update`); :func:`read_status` rebuilds the values, journal
applied, or raises :class:`StateError` naming the file.
"""

from __future__ import annotations

import dataclasses
import json
import operator
import os
from collections.abc import Callable

from qctl.conf import DomainDef, format_xml, parse_domain
from qctl.errors import QctlError, StateError
from qctl.qemu.devices import merge_live
from qctl.qemu.journal import MAX_BYTES, MAX_LINES, Update, line, new_generation
from qctl.qemu.ledger import Ledger, LedgerEntry
from qctl.qemu.process import ProcessIdentity
from qctl.qemu.runstate import RunState
from qctl.qemu.state import DomainDir, atomic_write
from qctl.qemu.summary import STATUS_VERSION, summary_of
from qctl.qemu.txn import JobRecord
from qctl.record import record

__all__ = [
    "STATUS_VERSION",
    "Stamp",
    "Status",
    "StatusRenderer",
    "StoredStatus",
    "read_status",
    "read_stored_status",
    "stamp_of",
    "status_stamp",
    "write_status",
]


@record(frozen=False)
class Status:
    """The content of a domain's status file."""

    identity: ProcessIdentity
    binary: str
    config: DomainDef
    live: DomainDef
    ledger: Ledger
    state: RunState = RunState.RUNNING
    job: JobRecord | None = None


class StatusRenderer:
    """Renders a domain's status file, or the journal line that brings the file written
    last up to date (:meth:`update`), re-serializing only what changed since last time.

    The definitions' XML is rendered once per version of them, and each ledger entry's
    JSON once per entry (entries are immutable: a step replaces one), so a hot-plug step
    costs the entry it changed, not the whole ledger. What was rendered last is taken to be
    on disk: call :meth:`reset` when a write failed or another process wrote the file.
    """

    def __init__(self) -> None:
        self._xml: dict[str, tuple[DomainDef, str]] = {}
        #: the entries as last rendered (and so on disk), by alias, in the ledger's order;
        #: their JSON is kept for the next render whatever is on disk
        self._entries: dict[str, tuple[LedgerEntry, str]] = {}
        #: what is on disk, as far as a line can change; None: the next write is whole
        self._base: _Base | None = None
        self._lines = 0
        self._bytes = 0

    def reset(self) -> None:
        """Forget what is on disk: the next :meth:`update` renders the whole file."""
        self._base = None

    def _xml_of(self, key: str, domain: DomainDef, given: str | None) -> str:
        if given is not None:
            return given
        cached = self._xml.get(key)
        if cached is None or cached[0] is not domain:
            cached = (domain, format_xml(domain))
            self._xml[key] = cached
        return cached[1]

    def _entry_json(self, entry: LedgerEntry) -> str:
        cached = self._entries.get(entry.alias)
        if cached is None or cached[0] is not entry:
            return _dumps(entry)
        return cached[1]

    def render(self, status: Status, *, live_xml: str | None = None) -> bytes:
        """The whole status file's bytes, of a new journal generation. ``live_xml`` may be
        given already rendered (a snapshot that may lag: see
        :func:`~qctl.qemu.devices.merge_live`)."""
        live = self._xml_of("live", status.live, live_xml)
        job, state = _job_json(status.job), status.state.value
        generation = new_generation()
        ledger = status.ledger
        self._base = _Base(generation, status.config, live, ledger, ledger.changes, status.job,
                           job, state)  # fmt: skip
        self._lines = self._bytes = 0
        head = {
            "version": STATUS_VERSION,
            "name": status.live.name,
            "pid": status.identity.pid,
            "start_time": status.identity.start_time,
            "binary": status.binary,
            "config_xml": self._xml_of("config", status.config, None),
            "live_xml": live,
            "state": state,
            "journal": generation,
        }
        self._entries = {entry.alias: (entry, self._entry_json(entry)) for entry in status.ledger}
        entries = ",".join(cached[1] for cached in self._entries.values())
        text = json.dumps(head, separators=(",", ":"))
        return f'{text[:-1]},"job":{job},"ledger":[{entries}]}}'.encode()

    def update(self, status: Status, *, live_xml: str) -> Update:
        """What brings the file written last to ``status``: a journal line when only the
        ledger, the job or the run state changed (an empty one when nothing did), else the
        whole file (:meth:`render`)."""
        line = self._line(status, live_xml)
        if line is None:
            return Update(self.render(status, live_xml=live_xml), append=False)
        if line:
            self._lines += 1
            self._bytes += len(line)
        return Update(line, append=True)

    def _line(self, status: Status, live_xml: str) -> bytes | None:
        base = self._base
        ledger = status.ledger
        if (
            base is None
            or base.config is not status.config
            or base.live_xml is not live_xml
            or base.ledger is not ledger
            or self._lines >= MAX_LINES
            or self._bytes >= MAX_BYTES
        ):
            return None
        changed = ledger.changed_since(base.changes)
        if changed is None:
            return None  # an entry moved (a journal keeps the order), or too much changed
        entries = self._entries
        puts: list[str] = []
        drops: list[str] = []
        added: list[LedgerEntry] = []
        for alias in changed:
            entry = ledger.get(alias)
            cached = entries.get(alias)
            if entry is None:
                if cached is not None:
                    drops.append(alias)
                    del entries[alias]
            elif cached is None:
                added.append(entry)
            elif cached[0] is not entry:
                entries[alias] = cached = (entry, _changed_json(cached, entry))
                puts.append(cached[1])
        if len(added) > 1:  # they join the file in the ledger's order
            added.sort(key=lambda entry: ledger.position(entry.alias))
        for entry in added:
            entries[entry.alias] = cached = (entry, _dumps(entry))
            puts.append(cached[1])
        job = base.job_json if status.job is base.job else _job_json(status.job)
        state = status.state.value
        self._base = _Base(base.generation, base.config, base.live_xml, ledger, ledger.changes,
                           status.job, job, state)  # fmt: skip
        if not puts and not drops and job == base.job_json and state == base.state:
            return b""
        return line(
            base.generation,
            puts,
            drops,
            job=job if job != base.job_json else None,
            state=state if state != base.state else None,
        )


@record
class _Base:
    """What the status file and journal on disk say, as far as a journal line can change:
    a line is written against it (the definitions only identify the file's version)."""

    generation: str  # the status file's (:mod:`~qctl.qemu.journal`)
    config: DomainDef
    live_xml: str
    ledger: Ledger  # the ledger written, and how many changes it had made then
    changes: int
    job: JobRecord | None
    job_json: str
    state: str


def _dumps(entry: LedgerEntry) -> str:
    return json.dumps(entry.to_json(), separators=(",", ":"))


#: every field of a ledger entry but its state
_ALL_BUT_STATE = operator.attrgetter(
    *(field.name for field in dataclasses.fields(LedgerEntry) if field.name != "state")
)


def _changed_json(cached: tuple[LedgerEntry, str], entry: LedgerEntry) -> str:
    """``entry``'s JSON, given an earlier version's: when only the state changed (as most
    hot-plug steps change it), that one with the state put in (the first ``"state":"…"``
    is the key's: the values before it are JSON strings, whose quotes are escaped)."""
    earlier, text = cached
    if _ALL_BUT_STATE(earlier) == _ALL_BUT_STATE(entry):
        was, now = f'"state":"{earlier.state.value}"', f'"state":"{entry.state.value}"'
        if was in text:
            return text.replace(was, now, 1)
    return _dumps(entry)


def _job_json(job: JobRecord | None) -> str:
    if job is None:
        return "null"
    return json.dumps(job.to_json(), separators=(",", ":"))


def write_status(directory: DomainDir, status: Status) -> Stamp:
    """Atomically and durably replace the domain's status file (a one-off write: a running
    domain's runtime writes through its own renderer and writer); returns the stamp of the
    file written (so under whatever lock the caller holds)."""
    return stamp_of(atomic_write(directory.status_file, StatusRenderer().render(status)))


#: what identifies one version of a status file and its journal: inode, size and
#: modification time (ns) of each (zeros for no journal)
Stamp = tuple[int, int, int, int, int, int]

_NO_JOURNAL = (0, 0, 0)


def status_stamp(directory: DomainDir) -> Stamp | None:
    """What identifies the status file's current version (None when it is gone)."""
    try:
        info = directory.status_file.stat()
    except FileNotFoundError:
        return None
    try:
        journal = directory.journal_file.stat()
    except FileNotFoundError:
        journal = None
    return stamp_of(info, journal)


def stamp_of(info: os.stat_result, journal: os.stat_result | None = None) -> Stamp:
    """The stamp of a status file whose ``stat`` is ``info``, and of its journal."""
    if journal is None:
        return (info.st_ino, info.st_size, info.st_mtime_ns, *_NO_JOURNAL)
    return (info.st_ino, info.st_size, info.st_mtime_ns, journal.st_ino, journal.st_size,
            journal.st_mtime_ns)  # fmt: skip


@record(frozen=False)
class StoredStatus:
    """A status file as read, its two definitions not parsed yet: parsing them is most of
    what reading costs, and a connect that only queries QEMU or reconciles an empty ledger
    needs neither (:class:`~qctl.qemu.runtime.DomainRuntime` parses them on first use)."""

    identity: ProcessIdentity
    binary: str
    ledger: Ledger
    state: RunState
    job: JobRecord | None
    config_xml: str
    live_xml: str
    source: str

    def config(self) -> DomainDef:
        """The definition as given; StateError when the file's XML is damaged."""
        return self._parsed(lambda: parse_domain(self.config_xml, source=self.source))

    def live(self) -> DomainDef:
        """The live definition (the snapshot merged with the ledger); StateError when the
        file's XML is damaged."""
        return self._parsed(
            lambda: merge_live(
                parse_domain(self.live_xml, source=self.source, live=True), self.ledger
            )
        )

    def _parsed(self, parse: Callable[[], DomainDef]) -> DomainDef:
        try:
            return parse()
        except (KeyError, TypeError, ValueError, AttributeError, QctlError) as exc:
            raise StateError(f"status file {self.source} is damaged: {exc}") from exc


def read_stored_status(directory: DomainDir) -> StoredStatus:
    """The domain's status, its definitions left unparsed; StateError when the file is
    missing or damaged (its XML is checked when parsed)."""
    data = directory.read_status()
    source = str(directory.status_file)
    try:
        summary = summary_of(data)
        return StoredStatus(
            identity=summary.identity,
            binary=str(data["binary"]),
            ledger=summary.ledger,
            state=summary.state,
            job=summary.job,
            config_xml=str(data["config_xml"]),
            live_xml=str(data["live_xml"]),
            source=source,
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise StateError(f"status file {source} is damaged: {exc}") from exc


def read_status(directory: DomainDir) -> Status:
    """The domain's status; StateError when the file is missing or damaged."""
    stored = read_stored_status(directory)
    return Status(
        identity=stored.identity,
        binary=stored.binary,
        config=stored.config(),
        live=stored.live(),
        ledger=stored.ledger,
        state=stored.state,
        job=stored.job,
    )
