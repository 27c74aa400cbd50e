"""Entry point of the ``qctl`` command: argument parsing, dispatch, and error reporting.

Each verb lives in a module with a ``register(subparsers)`` function that declares its
parser (:func:`qctl.cli.common.add_verb`) and its handler: a callable taking the parsed
arguments and returning an exit code. The verb modules import only :mod:`qctl`, whose names
load on first use, so building the parser costs no more than argparse: a verb pays for the
parts of the library it touches (``validate`` for lxml, ``start`` for qemu.qmp and
pyroute2), and ``qctl --help`` for none.

Errors are printed as one line on stderr and mapped to an exit code per branch of the error
tree; ``--debug`` shows the traceback instead. A reader that goes away (``qctl caps | head
-1``) ends the command quietly with status 141, as a shell reports a writer killed by
SIGPIPE.
"""

from __future__ import annotations

import argparse
import logging
import os
import select
import sys
from collections.abc import Sequence

import qctl
from qctl.cli import (
    caps_cmd,
    completion_cmd,
    conf_cmd,
    device_cmd,
    domain_cmd,
    iface_cmd,
    monitor_cmd,
    net_cmd,
)
from qctl.cli.common import add_global_options

# Exit codes: 0 success, 1 "no" (a check that answered false), 2 usage; then one per branch.
EXIT_CODES: tuple[tuple[type[qctl.QctlError], int], ...] = (
    (qctl.ConfigError, 3),
    (qctl.UnsupportedError, 4),
    (qctl.QMPError, 5),
    (qctl.HostError, 6),
    (qctl.ProcessError, 7),
    (qctl.StateError, 8),
    (qctl.HotplugError, 9),
    (qctl.QctlError, 10),
)
#: the status of a command whose reader closed the pipe (128 + SIGPIPE)
READER_GONE = 141

_EPILOG = """\
exit status: 0 success, 1 a check answered "no", 2 usage, 3 configuration error,
4 unsupported by QEMU or the host, 5 QMP, 6 host, 7 QEMU process, 8 state, 9 hotplug,
10 other qctl error, 141 the reader of the output went away.

`qctl COMMAND --help` describes a command, with examples."""


def exit_code_for(error: qctl.QctlError) -> int:
    """The exit code of the most specific branch ``error`` belongs to."""
    return next(code for kind, code in EXIT_CODES if isinstance(error, kind))


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, every command registered."""
    parser = argparse.ArgumentParser(
        prog="qctl",
        description="Control QEMU like libvirt's QEMU driver, without a daemon.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"qctl {qctl.__version__}")
    add_global_options(parser, in_verb=False)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (
        conf_cmd,
        caps_cmd,
        domain_cmd,
        device_cmd,
        iface_cmd,
        monitor_cmd,
        net_cmd,
        completion_cmd,
    ):
        module.register(sub)
    return parser


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


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code."""
    parser = build_parser()
    completion_cmd.complete_if_asked(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING,
        format="qctl: %(levelname)s: %(message)s",
    )
    try:
        code: int = args.func(args)
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
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
