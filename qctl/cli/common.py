"""What every ``qctl`` command shares: the state-dir option and JSON output."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from collections.abc import Coroutine
from typing import Any, TypeVar

from qctl import ValidationError


def add_state_dir(parser: argparse.ArgumentParser) -> None:
    """``--state-dir DIR``: where running domains keep their state (default: $QCTL_STATE_DIR,
    /run/qctl for root, the XDG runtime dir otherwise)."""
    parser.add_argument(
        "--state-dir",
        metavar="DIR",
        default=None,
        help="state root (default: $QCTL_STATE_DIR, /run/qctl for root)",
    )


def add_json(parser: argparse.ArgumentParser) -> None:
    """``--json``: print the result as JSON on stdout."""
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def print_json(data: Any) -> None:
    """Print ``data`` as indented JSON on stdout."""
    json.dump(data, sys.stdout, indent=2, sort_keys=False)
    sys.stdout.write("\n")


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


def warning_line(warning: ValidationError) -> str:
    """A warning as the CLI prints it: ``FILE:LINE: warning: PATH: message``."""
    where = warning.source or "<string>"
    if warning.line is not None:
        where = f"{where}:{warning.line}"
    text = f"{warning.path}: {warning.message}" if warning.path else warning.message
    return f"{where}: warning: {text}"
