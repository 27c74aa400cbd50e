"""What the verbs' handlers share: the state root they work in, and how they print.

JSON output has one shape per kind of thing, whichever verb prints it: a device, a domain
or a network is the model's JSON (:func:`qctl.def_to_dict`, as ``qctl format --json``); a
result of an action is ``{"domain"|"network": NAME, "result": WORD}``; streams (``events``)
are JSON Lines, one compact object per line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from collections.abc import Coroutine
from typing import Any, TypeVar

import qctl


def state_root(args: argparse.Namespace) -> qctl.StateRoot:
    """The state root named by ``--state-dir`` (or the default one)."""
    return qctl.StateRoot(args.state_dir)


def existing_state_root(args: argparse.Namespace) -> qctl.StateRoot:
    """The state root for a query: a ``--state-dir`` that does not exist, or a root that is
    not a directory, is an error (a typo must not read as "nothing there"); the default root
    may not exist yet."""
    root = state_root(args)
    if args.state_dir is not None and not root.path.exists():
        raise qctl.StateError(f"no state directory {root.path}")
    if root.path.exists() and not root.path.is_dir():
        raise qctl.StateError(f"state directory {root.path} is not a directory")
    return root


def print_json(data: Any) -> None:
    """Print a JSON document (indented) on stdout."""
    json.dump(data, sys.stdout, indent=2)
    sys.stdout.write("\n")


def print_json_line(data: Any) -> None:
    """Print one compact JSON object on a line of its own and flush (a JSON Lines stream)."""
    sys.stdout.write(json.dumps(data, default=str) + "\n")
    sys.stdout.flush()


def device_json(device: qctl.InterfaceDef | qctl.HostdevDef) -> Any:
    """A device as JSON: the model's own form, the same in every verb."""
    return qctl.def_to_dict(device)


T = TypeVar("T")


def run(work: Coroutine[Any, Any, T]) -> T:
    """Run ``work`` as the command's main task, with Ctrl-C handled as qctl promises.

    The first Ctrl-C cancels the task, so whatever it had started is rolled back; further
    ones while the rollback runs are refused with a note instead of killing the process
    half-way (which would leave the books for the next command to reconcile).
    """

    async def main() -> T:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        interrupts = 0

        def interrupted() -> None:
            nonlocal interrupts
            interrupts += 1
            if interrupts == 1:
                task.cancel()
            else:
                print(
                    "qctl: still undoing what was started; please wait",
                    file=sys.stderr,
                    flush=True,
                )

        loop.add_signal_handler(signal.SIGINT, interrupted)
        try:
            return await work
        finally:
            loop.remove_signal_handler(signal.SIGINT)

    try:
        return asyncio.run(main())
    except asyncio.CancelledError:
        raise KeyboardInterrupt from None


def warning_line(warning: qctl.ValidationError) -> str:
    """A warning as the CLI prints it: ``FILE:LINE: warning: PATH: message``."""
    where = warning.source or "<string>"
    if warning.line is not None:
        where = f"{where}:{warning.line}"
    text = f"{warning.path}: {warning.message}" if warning.path else warning.message
    return f"{where}: warning: {text}"
