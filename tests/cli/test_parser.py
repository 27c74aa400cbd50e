"""The parser is built for the verb being run: each group declares exactly the verbs
:data:`qctl.cli.parser.VERB_GROUPS` says, and a run parses as with every verb declared."""

from __future__ import annotations

import argparse

import pytest

from qctl.cli.parser import VERB_GROUPS, build_parser, verb_of


def _verbs(parser: argparse.ArgumentParser) -> list[str]:
    return list(parser._subparsers._group_actions[0].choices)  # type: ignore[union-attr,arg-type]


@pytest.mark.parametrize("group", VERB_GROUPS, ids=lambda g: g[0].__name__)
def test_each_group_declares_the_verbs_listed_for_it(
    group: tuple[object, frozenset[str]],
) -> None:
    _, verbs = group
    for verb in verbs:
        assert set(_verbs(build_parser([verb]))) == verbs


def test_the_groups_together_are_every_verb_in_help_order() -> None:
    listed = [verb for _, verbs in VERB_GROUPS for verb in verbs]
    assert len(listed) == len(set(listed)), "a verb listed in two groups"
    assert set(_verbs(build_parser())) == set(listed)
    assert _verbs(build_parser([])) == _verbs(build_parser())


@pytest.mark.parametrize(
    ("argv", "verb"),
    [
        (["attach-device", "vm1", "nic.xml"], "attach-device"),
        (["--state-dir", "list", "list"], "list"),  # a state dir called "list"
        (["--json", "--state-dir=/tmp/x", "dumpxml", "vm1"], "dumpxml"),
        (["--debug", "domstate", "vm1", "--state-dir", "start"], "domstate"),
        (["--help"], None),
        (["atach-device", "vm1"], None),  # a typo: every verb, for argparse's suggestions
        ([], None),
    ],
)
def test_the_verb_is_found_past_global_options(argv: list[str], verb: str | None) -> None:
    assert verb_of(argv) == verb


@pytest.mark.parametrize(
    "argv",
    [
        ["--state-dir", "/s", "attach-device", "vm1", "nic.xml", "--json"],
        ["detach-device", "vm1", "nic.xml", "--wait", "30", "--state-dir", "/s"],
        ["migrate", "vm1", "--uri", "tcp:192.0.2.2:4444", "--debug"],
        ["attach-interface", "vm1", "bridge", "br0", "--model", "virtio"],
        ["net-list", "--json"],
    ],
)
def test_a_run_parses_as_with_every_verb_declared(argv: list[str]) -> None:
    assert build_parser(argv).parse_args(argv) == build_parser().parse_args(argv)


def test_a_typo_is_told_the_valid_verbs(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser(["atach-device"]).parse_args(["atach-device"])
    assert "attach-device" in capsys.readouterr().err
