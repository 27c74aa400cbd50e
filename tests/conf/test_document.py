"""The 10 MiB limit on configuration documents, at every way in (issue 11, item 7)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from qctl.conf import MAX_DOCUMENT_BYTES, check, load, parse_domain, read_document
from qctl.errors import ConfigError

LIMIT = "the document is larger than the 10 MiB limit"
# Small unknown elements: what cost validate a minute and gigabytes before the limit.
HUGE = "<domain type='qemu'>" + "<x/>" * (11 * 1024 * 1024 // 4) + "</domain>"


def test_the_limit_is_10_mib() -> None:
    assert MAX_DOCUMENT_BYTES == 10 * 1024 * 1024


@pytest.mark.parametrize("data", [HUGE, HUGE.encode()], ids=["str", "bytes"])
def test_strings_and_bytes_over_the_limit_are_refused_unparsed(data: str | bytes) -> None:
    with pytest.raises(ConfigError, match=f"^big.xml: {LIMIT}$"):
        parse_domain(data, source="big.xml")
    assert [str(p) for p in check(data, source="big.xml")] == [f"big.xml: {LIMIT}"]


def test_a_string_of_many_byte_characters_is_measured_in_bytes() -> None:
    text = "<domain><!--" + "é" * (MAX_DOCUMENT_BYTES // 2) + "--></domain>"
    assert len(text) < MAX_DOCUMENT_BYTES
    with pytest.raises(ConfigError, match=LIMIT):
        parse_domain(text)


def test_a_file_over_the_limit_is_refused(tmp_path: Path) -> None:
    big = tmp_path / "big.xml"
    big.write_text(HUGE)
    with pytest.raises(ConfigError, match=f"^{big}: {LIMIT}$"):
        load(big)
    with pytest.raises(ConfigError, match=LIMIT):
        read_document(big)


def test_a_document_at_the_limit_is_read(tmp_path: Path) -> None:
    edge = tmp_path / "edge.xml"
    edge.write_bytes(b" " * MAX_DOCUMENT_BYTES)
    assert len(read_document(edge)) == MAX_DOCUMENT_BYTES


def test_cli_refuses_big_files_and_stdin_in_one_line(tmp_path: Path) -> None:
    big = tmp_path / "big.xml"
    big.write_text(HUGE)
    for command, file, given in (("validate", str(big), None), ("format", str(big), None),
                                 ("validate", "-", HUGE), ("format", "-", HUGE)):
        result = subprocess.run(
            [sys.executable, "-m", "qctl.cli.main", command, file],
            input=given,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 3
        assert result.stderr.removeprefix("qctl: ") == f"{file}: {LIMIT}\n"
