"""``qctl validate`` and ``qctl format``: check configuration documents, print them normalized.

``validate FILE...`` reports every problem of every file, one ``FILE:LINE: …`` line each on
stderr (or a JSON report on stdout with ``--json``), and exits 0 only when all are valid.
``format FILE`` prints the normalized XML (or the model as JSON with ``--json``).
``--live`` reads the XML of a running domain, whose devices have aliases qctl (or libvirt)
chose rather than ``ua-`` user aliases.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import qctl
from qctl.cli.common import print_json

# The exit code of a ConfigError (see EXIT_CODES in qctl.cli.main), used when files are
# invalid: validate reports the problems itself instead of raising the first one.
_INVALID = 3


def _problems(path: str, *, live: bool) -> list[qctl.ConfigError]:
    """Every problem of the file at ``path``, an unreadable file included."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        return [qctl.ConfigError(f"cannot read: {exc.strerror or exc}", source=path)]
    return qctl.check(data, source=path, live=live)


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
        problems = _problems(path, live=args.live)
        report.append((path, problems))
        if not args.json:
            for problem in problems:
                print(problem, file=sys.stderr)
    if args.json:
        data = [
            {"file": path, "valid": not problems, "problems": [_problem_data(p) for p in problems]}
            for path, problems in report
        ]
        print_json(data)
    return _INVALID if any(problems for _, problems in report) else 0


def format_(args: argparse.Namespace) -> int:
    defn = qctl.load(args.file, live=args.live)
    if args.json:
        print_json(qctl.def_to_dict(defn))
    else:
        sys.stdout.write(qctl.format_xml(defn))
    return 0


