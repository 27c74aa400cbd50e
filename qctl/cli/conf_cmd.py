"""``qctl validate`` and ``qctl format``: check configuration documents, print them normalized.

``validate FILE...`` reports every problem of every file, one ``FILE:LINE: …`` line each on
stderr (or a JSON report on stdout with ``--json``), and exits 0 only when all are valid.
Parts of an ``<interface>`` or ``<hostdev>`` that qctl would not apply are problems ("not
supported by qctl"); ``--lenient`` reports them as warnings (``FILE:LINE: warning: …``),
which do not fail the file, as are the doubts libvirt accepts (two NICs with one MAC).
``format FILE`` prints the normalized XML (or the model as JSON with ``--json``); parts qctl
would not apply are passed through.
In a valid domain, a disk image that does not exist is a problem too (not with ``--live``:
a running domain's images were checked when it started), and device elements that ``start``
would refuse because qctl does not create them (``<video>``, …) are warnings.
``--live`` reads the XML of a running domain, whose devices have aliases qctl (or libvirt)
chose rather than ``ua-`` user aliases.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from qctl import (
    ConfigError,
    DomainDef,
    ValidationError,
    XMLSyntaxError,
    def_to_dict,
    format_xml,
    load,
    missing_images,
    not_created,
    read_document,
    review,
)
from qctl.cli.common import warning_line

# The exit code of a ConfigError (see EXIT_CODES in qctl.cli.main), used when files are
# invalid: validate reports the problems itself instead of raising the first one.
_INVALID = 3
_LIVE_HELP = "the XML of a running domain: allow device aliases not chosen by the user (net0)"
_LENIENT_HELP = "report parts qctl would not apply (not supported by qctl) as warnings"


def _problems(
    path: str, *, live: bool, lenient: bool
) -> tuple[list[ConfigError], list[ValidationError]]:
    """Every problem and warning of the file at ``path``, an unreadable file included."""
    try:
        data = read_document(path)
    except ConfigError as exc:
        return [exc], []
    return review(data, source=path, live=live, lenient=lenient)


def _start_problems(
    path: str, *, live: bool, lenient: bool
) -> tuple[list[ConfigError], list[ValidationError]]:
    """What a start would refuse in the valid document at ``path``: missing disk images
    (problems), devices qctl does not create (warnings)."""
    defn = load(path, live=live, lenient=lenient)
    if not isinstance(defn, DomainDef):
        return [], []
    images: list[ConfigError] = [] if live else list(missing_images(defn, source=path))
    return images, list(not_created(defn, source=path))


def _problem_data(problem: ConfigError) -> dict[str, Any]:
    return {
        "line": problem.line,
        "column": problem.column if isinstance(problem, XMLSyntaxError) else None,
        "path": problem.path,
        "message": problem.message,
    }


def _validate(args: argparse.Namespace) -> int:
    report = []
    for path in args.files:
        problems, warnings = _problems(path, live=args.live, lenient=args.lenient)
        if not problems:
            more, doubts = _start_problems(path, live=args.live, lenient=args.lenient)
            problems, warnings = problems + more, warnings + doubts
        report.append((path, problems, warnings))
        if not args.json:
            for problem in problems:
                print(problem, file=sys.stderr)
            for warning in warnings:
                print(warning_line(warning), file=sys.stderr)
    if args.json:
        data = [
            {
                "file": path,
                "valid": not problems,
                "problems": [_problem_data(p) for p in problems],
                "warnings": [_problem_data(w) for w in warnings],
            }
            for path, problems, warnings in report
        ]
        print(json.dumps(data, indent=2))
    return _INVALID if any(problems for _, problems, _ in report) else 0


def _format(args: argparse.Namespace) -> int:
    defn = load(args.file, live=args.live, lenient=True)
    if args.json:
        print(json.dumps(def_to_dict(defn), indent=2))
    else:
        sys.stdout.write(format_xml(defn))
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``validate`` and ``format`` commands."""
    validate = sub.add_parser(
        "validate",
        help="check domain, device and network documents",
        description="Check each FILE and report every problem as FILE:LINE: message.",
    )
    validate.add_argument("files", nargs="+", metavar="FILE", help="a file, or - for stdin")
    validate.add_argument("--json", action="store_true", help="print a JSON report on stdout")
    validate.add_argument("--live", action="store_true", help=_LIVE_HELP)
    validate.add_argument("--lenient", action="store_true", help=_LENIENT_HELP)
    validate.set_defaults(func=_validate)

    fmt = sub.add_parser(
        "format",
        help="print a document normalized",
        description="Print FILE as normalized XML (it must be valid; parts qctl would not "
        "apply are passed through).",
    )
    fmt.add_argument("file", metavar="FILE", help="a file, or - for stdin")
    fmt.add_argument("--json", action="store_true", help="print the model as JSON instead")
    fmt.add_argument("--live", action="store_true", help=_LIVE_HELP)
    fmt.set_defaults(func=_format)
