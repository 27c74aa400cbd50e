"""The status file's journal: a hot-plug step appends what it changed instead of rewriting
the whole file.

A running domain's status file is rewritten whole (temporary file, fsync, rename, fsync of
the directory) only when its definitions change or its journal has grown long; in between,
each write appends one line to ``status.journal`` beside it: the ledger entries that
changed, the aliases dropped, and the job record and run state when they changed. An append
costs what changed, and on a disk one ``fdatasync`` instead of a new file and two syncs.

Each whole write names a new *generation* (``"journal"`` in the status file), removes the
journal and starts the next one afresh; a line counts only with its status file's
generation. So a crash between the rename and the journal's removal leaves lines that are
ignored, never applied twice, and a line torn by a crash (no newline yet: its write was
never waited for) is dropped. Readers (:meth:`~qctl.qemu.state.DomainDir.read_status`) read
the journal first, then the status file: a rewrite in between makes the lines read stale
(another generation), and the status file then holds them already.
"""

from __future__ import annotations

import json
import os
from typing import Any

from qctl.record import record

__all__ = ["JOURNAL_NAME", "MAX_BYTES", "MAX_LINES", "Update", "line", "merge", "new_generation"]

#: the journal's name, beside ``status.json``
JOURNAL_NAME = "status.journal"
#: a journal this long is folded into the status file by the next write
MAX_LINES = 64
MAX_BYTES = 256 * 1024


@record
class Update:
    """One write of a domain's books: the whole status file, or a line for its journal
    (empty when nothing changed since the last write)."""

    data: bytes
    append: bool


def new_generation() -> str:
    """A generation for a status file written whole (unique: never one a journal had)."""
    return os.urandom(8).hex()


def line(
    generation: str,
    puts: list[str],
    drops: list[str],
    *,
    job: str | None = None,
    state: str | None = None,
) -> bytes:
    """A journal line: ``puts`` are ledger entries already as JSON, ``job`` the job record
    as JSON (``"null"`` for none) and ``state`` the run state, each when it changed."""
    parts = [f'"gen":{json.dumps(generation)}']
    if puts:
        parts.append(f'"put":[{",".join(puts)}]')
    if drops:
        parts.append(f'"drop":{json.dumps(drops)}')
    if job is not None:
        parts.append(f'"job":{job}')
    if state is not None:
        parts.append(f'"state":{json.dumps(state)}')
    return f"{{{','.join(parts)}}}\n".encode()


def merge(data: dict[str, Any], journal: bytes) -> None:
    """Apply the lines of ``journal`` that belong to status file ``data`` (same generation)
    to it, in order. A torn last line is dropped, and so is everything from a line of this
    generation that does not parse (a crash garbled the journal's unsynced tail: a synced
    line makes every line before it last); lines of other generations are skipped unread.
    TypeError/KeyError/AttributeError when a line parses but is not a change (the status is
    damaged, as for a damaged status file)."""
    generation = data.get("journal")
    if generation is None or not journal:
        return
    ours = f'{{"gen":{json.dumps(generation)}'.encode()
    entries: dict[str, Any] | None = None
    for raw in journal.split(b"\n")[:-1]:  # what follows the last newline is torn
        if not raw.startswith(ours):
            continue  # another generation's (left by a crash), never parsed
        try:
            change = json.loads(raw)
        except ValueError:
            break  # a line a crash cut or garbled: it and what follows were never synced
        if entries is None:
            entries = {entry["alias"]: entry for entry in data["ledger"]}
        for entry in change.get("put", ()):
            entries[entry["alias"]] = entry
        for alias in change.get("drop", ()):
            entries.pop(alias, None)
        if "job" in change:
            data["job"] = change["job"]
        if "state" in change:
            data["state"] = change["state"]
    if entries is not None:
        data["ledger"] = list(entries.values())
