"""``qctl start`` and ``qctl domxml-to-argv`` refuse, in one line naming the file and line,
what QEMU would not get: a device qctl does not create, a disk image that does not exist.
Nothing is started or created."""

from __future__ import annotations

from pathlib import Path

import pytest

from qctl.cli.main import main

DOMAIN = """<domain type='qemu'>
  <name>refused</name>
  <memory unit='MiB'>64</memory>
  <os><type>hvm</type></os>
  <devices>
{devices}
  </devices>
</domain>
"""


def _write(tmp_path: Path, devices: str) -> Path:
    path = tmp_path / "domain.xml"
    path.write_text(DOMAIN.format(devices=devices))
    return path


@pytest.mark.parametrize("command", ["start", "domxml-to-argv"])
def test_a_device_qctl_does_not_create_is_refused(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path, "    <sound model='ich9'/>")
    state = tmp_path / "state"
    assert main([command, str(path), "--state-dir", str(state)]) == 3
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(
        f"qctl: {path}:6: /domain/devices/sound[1]: <sound model=\"ich9\"> is not created by "
        "qctl, so QEMU would not get it; remove it"
    )
    assert err.count("\n") == 1
    assert not state.exists()


def test_start_refuses_a_missing_disk_image(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = tmp_path / "root.qcow2"
    path = _write(
        tmp_path,
        f"    <disk type='file'>\n      <driver name='qemu' type='qcow2'/>\n"
        f"      <source file='{image}'/>\n      <target dev='vda'/>\n    </disk>",
    )
    state = tmp_path / "state"
    assert main(["start", str(path), "--state-dir", str(state)]) == 3
    assert capsys.readouterr().err == (
        f"qctl: {path}:8: /domain/devices/disk[1]/source: disk vda: image file '{image}' "
        "does not exist\n"
    )
    assert not state.exists()
    # the dry run builds the command line without the image
    assert main(["domxml-to-argv", str(path), "--state-dir", str(state)]) == 0
    assert f'"filename":"{image}"' in capsys.readouterr().out
