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
import sys
from typing import Any

import qctl
from qctl.cli.common import print_json, warning_line

# The exit code of a ConfigError (see EXIT_CODES in qctl.cli.main), used when files are
# invalid: validate reports the problems itself instead of raising the first one.
_INVALID = 3


def _problems(
    path: str, *, live: bool, lenient: bool
) -> tuple[list[qctl.ConfigError], list[qctl.ValidationError]]:
    """Every problem and warning of the file at ``path``, an unreadable file included."""
    try:
        data = qctl.read_document(path)
    except qctl.ConfigError as exc:
        return [exc], []
    return qctl.review(data, source=path, live=live, lenient=lenient)


def _start_problems(
    path: str, *, live: bool, lenient: bool
) -> tuple[list[qctl.ConfigError], list[qctl.ValidationError]]:
    """What a start would refuse in the valid document at ``path``: missing disk images
    (problems), devices qctl does not create (warnings)."""
    defn = qctl.load(path, live=live, lenient=lenient)
    if not isinstance(defn, qctl.DomainDef):
        return [], []
    images: list[qctl.ConfigError] = []
    if not live:
        images = list(qctl.missing_images(defn, source=path))
    return images, list(qctl.not_created(defn, source=path))


def _problem_data(problem: qctl.ConfigError) -> dict[str, Any]:
    return {
        "line": problem.line,
        "column": problem.column if isinstance(problem, qctl.XMLSyntaxError) else None,
        "path": problem.path,
        "message": problem.message,
    }


def validate(args: argparse.Namespace) -> int:
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
        print_json(data)
    return _INVALID if any(problems for _, problems, _ in report) else 0


def format_(args: argparse.Namespace) -> int:
    defn = qctl.load(args.file, live=args.live, lenient=True)
    if args.json:
        print_json(qctl.def_to_dict(defn))
    else:
        sys.stdout.write(qctl.format_xml(defn))
    return 0
