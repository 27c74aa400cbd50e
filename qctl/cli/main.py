"""Entry point of the ``qctl`` command: argument parsing, dispatch, and error reporting.

Each command lives in its own module with a ``register(subparsers)`` function that adds
its parser and sets ``func`` to a callable taking the parsed arguments and returning an exit
code. Errors are printed as one line on stderr and mapped to an exit code per branch of
the error tree; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from qctl import (
    ConfigError,
    HostError,
    HotplugError,
    ProcessError,
    QctlError,
    QMPError,
    StateError,
    UnsupportedError,
    __version__,
)
from qctl.cli import caps_cmd, conf_cmd, console_cmd, device_cmd, domain_cmd, net_cmd

# Exit codes: 0 success, 1 "no" (a check that answered false), 2 usage; then one per branch.
EXIT_CODES: tuple[tuple[type[QctlError], int], ...] = (
    (ConfigError, 3),
    (UnsupportedError, 4),
    (QMPError, 5),
    (HostError, 6),
    (ProcessError, 7),
    (StateError, 8),
    (HotplugError, 9),
    (QctlError, 10),
)


def exit_code_for(error: QctlError) -> int:
    """The exit code of the most specific branch ``error`` belongs to."""
    return next(code for kind, code in EXIT_CODES if isinstance(error, kind))


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, every command registered."""
    parser = argparse.ArgumentParser(
        prog="qctl", description="Control QEMU like libvirt's QEMU driver, without a daemon."
    )
    parser.add_argument("--version", action="version", version=f"qctl {__version__}")
    parser.add_argument("--debug", action="store_true", help="log verbosely, show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (conf_cmd, caps_cmd, domain_cmd, device_cmd, net_cmd, console_cmd):
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING,
        format="qctl: %(levelname)s: %(message)s",
    )
    try:
        code: int = args.func(args)
    except QctlError as exc:
        if args.debug:
            raise
        print(f"qctl: {exc}", file=sys.stderr)
        return exit_code_for(exc)
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
