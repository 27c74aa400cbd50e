"""``qctl validate`` and ``qctl format`` through the real entry point."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from qctl.cli.main import main
from qctl.conf import format_xml, load

EXAMPLES = Path(__file__).parents[2] / "examples"
BAD = (
    "<domain type='qemu'>\n"
    "  <name>bad</name>\n"
    "  <memory unit='MiB'>64</memory>\n"
    "  <os><type>hvm</type></os>\n"
    "  <devices>\n"
    "    <interface type='user'>\n"
    "      <mac address='01:00:5e:00:00:01'/>\n"
    "      <alias name='net0'/>\n"
    "    </interface>\n"
    "  </devices>\n"
    "</domain>\n"
)


@pytest.fixture
def bad(tmp_path: Path) -> Path:
    path = tmp_path / "bad.xml"
    path.write_text(BAD)
    return path


def test_validate_valid_files(capsys: pytest.CaptureFixture[str]) -> None:
    files = [str(p) for p in sorted(EXAMPLES.glob("*.xml"))]
    assert main(["validate", *files]) == 0
    assert capsys.readouterr() == ("", "")


def test_validate_reports_one_line_per_problem(
    bad: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing.xml"
    good = EXAMPLES / "network-bridge.xml"
    assert main(["validate", str(good), str(bad), str(missing)]) == 3
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        f"{bad}:7: /domain/devices/interface[1]/mac: "
        "multicast MAC address 01:00:5e:00:00:01 is not allowed for a NIC",
        f"{bad}:8: /domain/devices/interface[1]/alias: "
        "alias 'net0' must be 'ua-' followed by letters, digits, '_' or '-'",
        f"{missing}: cannot read: No such file or directory",
    ]


def test_validate_reports_malformed_xml_with_line_and_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "broken.xml"
    path.write_text("<domain type='qemu'>\n  <name>x</nam>\n</domain>\n")
    assert main(["validate", str(path)]) == 3
    assert capsys.readouterr().err.startswith(f"{path}:2:16: Opening and ending tag mismatch")


def test_validate_json(bad: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = EXAMPLES / "domain-basic.xml"
    assert main(["validate", "--json", str(good), str(bad)]) == 3
    out, err = capsys.readouterr()
    assert err == ""
    report = json.loads(out)
    assert report[0] == {"file": str(good), "valid": True, "problems": [], "warnings": []}
    assert report[1]["valid"] is False
    assert report[1]["problems"][0] == {
        "line": 7,
        "column": None,
        "path": "/domain/devices/interface[1]/mac",
        "message": "multicast MAC address 01:00:5e:00:00:01 is not allowed for a NIC",
    }


def test_live_xml_needs_live(capsys: pytest.CaptureFixture[str]) -> None:
    path = Path(__file__).parent / "data" / "roundtrip" / "domain-libvirt-live.xml"
    assert main(["validate", str(path)]) == 3
    assert "alias 'net0' must be 'ua-'" in capsys.readouterr().err
    assert main(["validate", "--live", "--lenient", str(path)]) == 0
    assert "<bandwidth> is not supported by qctl" in capsys.readouterr().err
    assert main(["format", "--live", str(path)]) == 0
    assert capsys.readouterr().out == path.with_name("domain-libvirt-live.out.xml").read_text()


def test_format_prints_normalized_xml(capsys: pytest.CaptureFixture[str]) -> None:
    path = EXAMPLES / "domain-failover.xml"
    assert main(["format", str(path)]) == 0
    assert capsys.readouterr().out == format_xml(load(path))


def test_format_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["format", "--json", str(EXAMPLES / "network-hostdev-vfs.xml")]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["kind"] == "network"
    assert data["forward"]["addresses"] == ["0000:3b:02.0", "0000:3b:02.1", "0000:3b:02.2"]


def test_format_of_an_invalid_file_fails_with_one_line(
    bad: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["format", str(bad)]) == 3
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        f"qctl: {bad}:7: /domain/devices/interface[1]/mac: "
        "multicast MAC address 01:00:5e:00:00:01 is not allowed for a NIC\n"
    )


def test_the_installed_command_never_shows_a_traceback(bad: Path, tmp_path: Path) -> None:
    qctl = Path(sys.executable).with_name("qctl")
    broken = tmp_path / "broken.xml"
    broken.write_bytes(b"<domain>\xff\x00")
    for args in (["validate", str(bad), str(broken), str(tmp_path)], ["format", str(broken)]):
        result = subprocess.run(
            [str(qctl), *args], capture_output=True, text=True, timeout=60, check=False
        )
        assert result.returncode == 3, result.stderr
        assert "Traceback" not in result.stderr
        assert result.stdout == ""
        assert all(
            line.startswith(("qctl: ", str(tmp_path))) for line in result.stderr.splitlines()
        )


def test_validate_warns_about_devices_qctl_does_not_create(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "video.xml"
    path.write_text(BAD.replace("01:00:5e", "52:54:00").replace("net0", "ua-n").replace(
        "  </devices>", "    <video><model type='vga'/></video>\n  </devices>"
    ))
    assert main(["validate", str(path)]) == 0
    assert capsys.readouterr().err.startswith(
        f"{path}:10: warning: /domain/devices/video[1]: <video> is not created by qctl"
    )
    assert main(["validate", "--json", str(path)]) == 0
    (report,) = json.loads(capsys.readouterr().out)
    assert report["valid"] is True and report["problems"] == []
    assert [w["path"] for w in report["warnings"]] == ["/domain/devices/video[1]"]


def test_validate_reports_a_missing_disk_image(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "disk.xml"
    image = tmp_path / "gone.img"
    path.write_text(BAD.replace("01:00:5e", "52:54:00").replace("net0", "ua-n").replace(
        "  </devices>",
        f"    <disk type='file'>\n      <source file='{image}'/>\n"
        "      <target dev='vda'/>\n    </disk>\n  </devices>",
    ))
    assert main(["validate", str(path)]) == 3
    assert capsys.readouterr().err == (
        f"{path}:11: /domain/devices/disk[1]/source: disk vda: image file '{image}' "
        "does not exist\n"
    )
    image.write_bytes(b"")
    assert main(["validate", str(path)]) == 0
