"""Entry point of the ``qctl`` command: parse, import the verb's handler, run it, report.

The parser (:mod:`qctl.cli.parser`) names each verb's handler as ``"module:function"``; only
that module is imported, so a verb pays for the parts of the library its handler uses and
``qctl --help`` for none of them.

Errors are printed as one line on stderr and mapped to an exit code per branch of the error
tree; ``--debug`` shows the traceback instead. A reader that goes away (``qctl caps | head
-1``) ends the command quietly with status 141, as a shell reports a writer killed by
SIGPIPE.
"""

from __future__ import annotations

import _thread
import argparse
import contextlib
import gc
import importlib
import logging
import os
import select
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, NoReturn

import qctl
from qctl.cli.complete import complete_if_asked, completing
from qctl.cli.parser import build_parser

if TYPE_CHECKING:
    from sys import UnraisableHookArgs

# Exit codes: 0 success, 1 "no" (a check that answered false), 2 usage; then one per branch.
EXIT_CODES: tuple[tuple[type[qctl.QctlError], int], ...] = (
    (qctl.ConfigError, 3),
    (qctl.UnsupportedError, 4),
    (qctl.QMPError, 5),
    (qctl.HostError, 6),
    (qctl.ProcessError, 7),
    (qctl.StateError, 8),
    (qctl.HotplugError, 9),
    (qctl.MigrationError, 11),
    (qctl.QctlError, 10),
)
#: the status of a command whose reader closed the pipe (128 + SIGPIPE)
READER_GONE = 141


def exit_code_for(error: qctl.QctlError) -> int:
    """The exit code of the most specific branch ``error`` belongs to."""
    return next(code for kind, code in EXIT_CODES if isinstance(error, kind))


def _stdout_reader_gone() -> bool:
    """True when stdout is a pipe whose reader closed it (poll reports an error on it)."""
    poller = select.poll()
    poller.register(sys.stdout.fileno(), 0)
    return any(events & select.POLLERR for _, events in poller.poll(0))


def _reader_gone() -> int:
    """stdout's reader left: point stdout at /dev/null so the flush at exit stays quiet."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return READER_GONE


def handler(reference: str) -> Callable[[argparse.Namespace], int]:
    """The handler ``"module:function"`` names in :mod:`qctl.cli`, its module imported now."""
    module, _, function = reference.partition(":")
    found: Callable[[argparse.Namespace], int] = getattr(
        importlib.import_module(f"qctl.cli.{module}"), function
    )
    return found


def entry() -> NoReturn:
    """The ``qctl`` console script: :func:`main`, then leave at once.

    A finished command's interpreter teardown (every module and object freed one by one,
    then the C libraries' destructors) cost about 20 ms here, a sixth of a hot-plug command;
    nothing in it is the command's work. qctl writes its files whole and closed, and every
    job has ended before :func:`main` returns, so only the standard streams and logging's
    handlers need flushing first. ``SystemExit`` (argparse's ``--help`` and usage errors)
    ends the same way, and so does a Ctrl-C that lands as :func:`main` returns (130); any
    other exception leaves the usual way, with its traceback.
    """
    # Start-up makes tens of thousands of objects that live as long as the process (modules,
    # classes, the parser): collecting young objects every 700 allocations, the default,
    # walked them ~60 times for nothing (5-8% of a command's start-up). Every 50 000 still
    # collects the cycles a long-running verb (events, console) leaves.
    gc.set_threshold(50_000)
    try:
        code = main()
    except KeyboardInterrupt:  # one more, after main() had dealt with the first
        code = 130
    except SystemExit as done:  # argparse: --help, a usage error
        if done.code is None or isinstance(done.code, int):
            code = done.code or 0
        else:
            if sys.stderr is not None:
                print(done.code, file=sys.stderr)
            code = 1
    try:
        logging.shutdown()
        try:
            if sys.stdout is not None:  # None: qctl was started with stdout closed
                sys.stdout.flush()
        except BrokenPipeError:
            code = _reader_gone()
        with contextlib.suppress(OSError):  # stderr's reader gone too: nobody left to tell
            if sys.stderr is not None:
                sys.stderr.flush()
    except KeyboardInterrupt:  # a Ctrl-C as the output drains (to a slow reader)
        code = 130
    os._exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code (130 after Ctrl-C, quietly,
    also when it comes before the verb runs)."""
    try:
        with _ctrl_c_kept():
            return _run(argv)
    except KeyboardInterrupt as exc:
        _drop_all_quietly(exc)
        return 130
    except Exception as exc:
        if _interrupted(exc):
            _drop_all_quietly(exc)
            return 130
        raise


@contextlib.contextmanager
def _ctrl_c_kept() -> Iterator[None]:
    """Within the block, a Ctrl-C that Python can only report, not raise, is raised again.

    A KeyboardInterrupt that lands in a callback Python calls on its own (a weakref's, as
    the import system's module locks have, or a ``__del__``) cannot propagate: Python
    prints "Exception ignored in …" with its traceback and goes on, and the Ctrl-C is
    lost (found by the faults script: a command interrupted while it imported its verb
    ran to the end). The unraisable hook interrupts the main thread again instead, from
    another thread and a moment later (every way of doing it from the hook itself raises
    the KeyboardInterrupt at once, in the hook, where it is lost the same way), or, when
    the block ends first, the block's end raises it: never once :func:`main` returned.
    Other unraisable errors go to the hook there was.
    """
    previous = sys.unraisablehook
    owed = _OwedInterrupt()

    def hook(unraisable: UnraisableHookArgs) -> None:
        if issubclass(unraisable.exc_type, KeyboardInterrupt):
            owed.later()
        else:
            previous(unraisable)

    sys.unraisablehook = hook
    try:
        yield
    finally:
        sys.unraisablehook = previous
        if owed.end():
            raise KeyboardInterrupt  # the block ended before it could come: it comes now


class _OwedInterrupt:
    """A Ctrl-C to raise again in the main thread, while a block runs (see
    :func:`_ctrl_c_kept`): never once the block has ended, which raises it itself."""

    def __init__(self) -> None:
        self._guard = _thread.allocate_lock()
        self._running = True
        self._owed = False

    def later(self) -> None:
        """Owe one; a thread raises it in a moment unless the block ends first."""
        with self._guard:
            if self._owed:
                return
            self._owed = True
        _thread.start_new_thread(self._raise_soon, ())

    def _raise_soon(self) -> None:
        import time

        time.sleep(_REINTERRUPT_DELAY)
        with self._guard:
            if self._running and self._owed:
                self._owed = False
                _thread.interrupt_main()

    def end(self) -> bool:
        """The block ended: whether a Ctrl-C is still owed (its caller raises it)."""
        with self._guard:
            self._running = False
            return self._owed


#: seconds the thread of :class:`_OwedInterrupt` leaves the hook to return first
_REINTERRUPT_DELAY = 0.01


def _drop_all_quietly(interrupt: BaseException) -> None:
    """:func:`_drop_quietly`, again with the newer one when another Ctrl-C cuts it short
    (before SIGINT is ignored): that one's chain holds the first."""
    while True:
        try:
            _drop_quietly(interrupt)
            return
        except KeyboardInterrupt as again:
            interrupt = again


def _drop_quietly(interrupt: BaseException) -> None:
    """Free what a Ctrl-C left half made, here and without a word: a coroutine
    ``asyncio.run`` never started ("never awaited"), an event loop cut short in its
    constructor (whose ``__del__`` then fails). They spoke on stderr as they were freed on
    the way out (found by the faults script's double SIGINT); the exit code already says
    what happened.

    The tracebacks of every exception in the chain are dropped (a second Ctrl-C during
    cleanup leaves the first in ``__context__``), with warnings and the unraisable hook
    silenced meanwhile and as they were afterwards, and a Ctrl-C ignored meanwhile: one
    landing in the restoring would have left warnings off. What only a cycle keeps is left
    alone: the process ends with ``os._exit``, which frees nothing, and a collection here
    took long enough (6 ms) for a second Ctrl-C to land in it."""
    import signal  # (only on this way out)

    previous = signal.getsignal(signal.SIGINT)
    held_off = previous is not None  # (None: set outside Python, and not to be replaced)
    try:
        if held_off:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread: nothing to hold off
        held_off = False
    hook = sys.unraisablehook
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sys.unraisablehook = _ignored
            for exc in _chain(interrupt):
                exc.__traceback__ = None  # its frames go, and their locals
    finally:
        sys.unraisablehook = hook
        if held_off:
            signal.signal(signal.SIGINT, previous)


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and every exception it came from (causes and contexts), each once."""
    seen: list[BaseException] = []
    pending: list[BaseException | None] = [exc]
    while pending:
        current = pending.pop()
        if current is None or any(current is known for known in seen):
            continue
        seen.append(current)
        pending += [current.__cause__, current.__context__]
    return seen


def _ignored(_unraisable: object) -> None:
    """An unraisable hook that says nothing."""


def _interrupted(exc: BaseException) -> bool:
    """Whether a Ctrl-C is what ``exc`` came from: Python turns one that lands in a class
    body's ``__set_name__`` (importing a module, say) into a RuntimeError."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, KeyboardInterrupt):
            return True
        seen = seen.__cause__
    return False


def _run(argv: Sequence[str] | None) -> int:
    args_given = sys.argv[1:] if argv is None else argv
    # Completion asks about any verb: it gets them all.
    parser = build_parser(None if completing() else args_given)
    complete_if_asked(parser)
    args = parser.parse_args(args_given)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING,
        format="qctl: %(levelname)s: %(message)s",
    )
    try:
        code = handler(args.handler)(args)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
    except BrokenPipeError:
        if not _stdout_reader_gone():
            raise  # some other pipe or socket: not the user's reader
        return _reader_gone()
    except qctl.QctlError as exc:
        if args.debug:
            raise
        print(f"qctl: {exc}", file=sys.stderr)
        return exit_code_for(exc)
    return code


if __name__ == "__main__":
    entry()
