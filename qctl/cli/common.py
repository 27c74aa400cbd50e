"""What every ``qctl`` command shares: the global options, how a verb is declared, output.

Global options (``--state-dir``, ``--json``, ``--debug``) are accepted before or after the
verb: the top-level parser declares them with real defaults, every verb's parser declares
them again with ``SUPPRESS`` defaults, so a value given before the verb is not overwritten
by the verb's parser.

JSON output has one shape per kind of thing, whichever verb prints it: a device, a domain
or a network is the model's JSON (:func:`qctl.def_to_dict`, as ``qctl format --json``); a
result of an action is ``{"domain"|"network": NAME, "result": WORD}``; streams (``events``)
are JSON Lines, one compact object per line.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeAlias

import qctl

Handler = Callable[[argparse.Namespace], int]
if TYPE_CHECKING:
    Subparsers: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]


def add_global_options(parser: argparse.ArgumentParser, *, in_verb: bool) -> None:
    """``--state-dir``, ``--json`` and ``--debug`` (see the module docstring for ``in_verb``)."""

    def default(value: object) -> object:
        return argparse.SUPPRESS if in_verb else value

    group = parser.add_argument_group("global options (before or after the command)")
    group.add_argument(
        "--state-dir",
        metavar="DIR",
        default=default(None),
        help="state root (default: $QCTL_STATE_DIR, /run/qctl for root, else "
        "$XDG_RUNTIME_DIR/qctl)",
    )
    group.add_argument(
        "--json", action="store_true", default=default(False), help="print the result as JSON"
    )
    group.add_argument(
        "--debug",
        action="store_true",
        default=default(False),
        help="log verbosely, show tracebacks",
    )


def add_verb(
    sub: Subparsers,
    name: str,
    handler: Handler,
    *,
    summary: str,
    description: str,
    examples: Sequence[str],
) -> argparse.ArgumentParser:
    """Declare verb ``name``: one-line ``summary`` for ``qctl --help``, a ``description`` and
    ``examples`` for ``qctl NAME --help``, and the ``handler`` that runs it."""
    parser = sub.add_parser(
        name,
        help=summary,
        description=description,
        epilog="examples:\n" + "\n".join(f"  {line}" for line in examples),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_global_options(parser, in_verb=True)
    parser.set_defaults(func=handler)
    return parser


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
