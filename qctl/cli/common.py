"""What every ``qctl`` command shares: the state-dir option and JSON output."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

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


def warning_line(warning: ValidationError) -> str:
    """A warning as the CLI prints it: ``FILE:LINE: warning: PATH: message``."""
    where = warning.source or "<string>"
    if warning.line is not None:
        where = f"{where}:{warning.line}"
    text = f"{warning.path}: {warning.message}" if warning.path else warning.message
    return f"{where}: warning: {text}"
