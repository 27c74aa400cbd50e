"""What the verbs' handlers share: the state root they work in, and how they print.

JSON output has one shape per kind of thing, whichever verb prints it: a device, a domain
or a network is the model's JSON (:func:`qctl.def_to_dict`, as ``qctl format --json``); a
result of an action is ``{"domain"|"network": NAME, "result": WORD}``; streams (``events``)
are JSON Lines, one compact object per line.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

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
    return root  # one that is not a directory, or not ours, is refused when it is opened


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


def warning_line(warning: qctl.ValidationError) -> str:
    """A warning as the CLI prints it: ``FILE:LINE: warning: PATH: message``."""
    where = warning.source or "<string>"
    if warning.line is not None:
        where = f"{where}:{warning.line}"
    text = f"{warning.path}: {warning.message}" if warning.path else warning.message
    return f"{where}: warning: {text}"
