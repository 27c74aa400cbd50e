"""What the state root holds, damaged state included, and the way to drop a damaged one.

:func:`list_domain_states` reads every domain's status file and reports, besides whether QEMU
runs, why a status file cannot be used (so ``qctl list`` shows a damaged domain with its
error instead of failing for all of them). :func:`discard_damaged` removes the state of a
domain whose status file is damaged, after checking that no QEMU runs for it: what its ledger
held cannot be known, so nothing is released (``qctl stop --force NAME`` does this).
"""

from __future__ import annotations

from pathlib import Path

from qctl.errors import StateError
from qctl.qemu.process import QEMUProcess
from qctl.qemu.state import DomainDir, StateRoot
from qctl.qemu.status import read_status
from qctl.record import record

__all__ = ["DomainState", "discard_damaged", "list_domain_states"]


@record
class DomainState:
    """A domain with a state directory: its QEMU's pid, whether QEMU runs, and ``problem``,
    why its status file cannot be used (None when it can)."""

    name: str
    pid: int | None
    running: bool
    problem: str | None = None


def _root(state_root: StateRoot | Path | str | None) -> StateRoot:
    return state_root if isinstance(state_root, StateRoot) else StateRoot(state_root)


def _problem(directory: DomainDir) -> tuple[str | None, DomainState | None]:
    """Why ``directory``'s status cannot be used, or its state when it can."""
    try:
        status = read_status(directory)
    except StateError as exc:
        return str(exc), None
    except (AttributeError, KeyError, TypeError, ValueError) as exc:  # shapes read_status misses
        return f"status file {directory.status_file} is damaged: {exc}", None
    running = QEMUProcess(status.identity, directory.log_file).alive()
    return None, DomainState(directory.name, status.identity.pid, running)


def list_domain_states(state_root: StateRoot | Path | str | None = None) -> list[DomainState]:
    """Every domain with a status file, sorted by name; damaged ones with their problem.

    A damaged domain counts as running while a QEMU may still serve it
    (:meth:`~qctl.qemu.state.DomainDir.qemu_lives`).
    """
    root = _root(state_root)
    found = []
    for name in root.names():
        directory = root.domain(name)
        problem, state = _problem(directory)
        if state is None:
            state = DomainState(name, None, directory.qemu_lives(), problem)
        found.append(state)
    return found


def discard_damaged(name: str, state_root: StateRoot | Path | str | None = None) -> str:
    """Remove the state of domain ``name`` whose status file is damaged; returns the problem.

    Refused (:class:`StateError`) when its status file is fine (stop it normally) or while a
    QEMU may still run for it. Nothing its ledger held is released: it cannot be read.
    """
    directory = _root(state_root).domain(name)
    problem, _ = _problem(directory)
    if problem is None:
        raise StateError(f"the state of domain {name!r} is not damaged: nothing to discard")
    if problem.startswith("no domain named"):
        raise StateError(problem)
    directory.discard()
    return problem
