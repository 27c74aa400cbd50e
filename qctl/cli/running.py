"""How a verb runs its asyncio work: Ctrl-C rolls back what was started, never half of it.

A module of its own so that verbs with no asyncio work (``validate``, ``format``) do not
import asyncio.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["run"]

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
