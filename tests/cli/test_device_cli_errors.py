"""attach-device and detach-device given a file they cannot use: one line, no traceback
(issue 11, item 12). The file is read and parsed before any domain is looked up."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import run_qctl


@pytest.mark.parametrize("verb", ["attach-device", "detach-device"])
def test_unusable_device_files_are_one_line(verb: str, tmp_path: Path) -> None:
    missing = tmp_path / "missing.xml"
    folder = tmp_path / "folder"
    folder.mkdir()
    latin = tmp_path / "latin.xml"
    latin.write_bytes(b"<interface type='user'>\n  <alias name='ua-\xe9'/>\n</interface>\n")
    expected = {
        missing: f"qctl: {missing}: cannot read: No such file or directory",
        folder: f"qctl: {folder}: cannot read: Is a directory",
        latin: f"qctl: {latin}:2:",
    }
    for path, line in expected.items():
        result = run_qctl(verb, "vm", str(path), state=tmp_path / "state", check=False)
        assert result.returncode == 3, result.stderr
        assert result.stderr.startswith(line) and len(result.stderr.splitlines()) == 1
        assert not (tmp_path / "state").exists()
