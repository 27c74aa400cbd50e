"""A damaged status file: ``qctl list`` shows it with its error, ``qctl stop --force`` drops it
once no QEMU runs for it (issue 11, item 4)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from support import run_qctl

from qctl.qemu.process import process_identity
from qctl.qemu.state import StateRoot

DEAD_PID = 2**22 + 1  # above pid_max's default: no such process


def _plant(state: Path, name: str, status: bytes) -> Path:
    directory = StateRoot(state).domain(name)
    directory.make()
    directory.status_file.write_bytes(status)
    directory.status_file.chmod(0o600)
    return directory.status_file


def test_list_shows_damaged_domains_and_stop_force_drops_them(tmp_path: Path) -> None:
    state = tmp_path / "state"
    me = process_identity(os.getpid())
    ledger_of_numbers = {"version": 1, "pid": DEAD_PID, "start_time": 1, "ledger": [1, 2]}
    broken = _plant(state, "broken", json.dumps(ledger_of_numbers).encode())
    garbled = _plant(state, "garbled", b"{not json")
    alive = {"pid": me.pid, "start_time": me.start_time, "ledger": "nope"}
    _plant(state, "alive", json.dumps(alive).encode())

    rows = {r["name"]: r for r in json.loads(run_qctl("list", "--json", state=state).stdout)}
    assert rows.keys() == {"alive", "broken", "garbled"}
    assert all(r["state"] == "damaged" for r in rows.values())
    assert rows["broken"]["error"].startswith(f"status file {broken} is damaged:")
    assert rows["garbled"]["error"].startswith(f"status file {garbled} is unreadable:")
    text = run_qctl("list", state=state).stdout
    assert f"broken{' ' * 18}        -  damaged: status file {broken} is damaged" in text

    # (A ledger of non-objects still escapes status.read_status on connect: the lead's fix.)
    plain = run_qctl("stop", "garbled", state=state, check=False)
    assert plain.returncode == 8 and len(plain.stderr.splitlines()) == 1

    for name in ("broken", "garbled"):
        dropped = run_qctl("stop", "--force", name, state=state)
        assert dropped.stdout.startswith(f"discarded the damaged state of {name} (status file")
        assert not (state / "domains" / name).exists()

    refused = run_qctl("stop", "--force", "alive", state=state, check=False)
    assert refused.returncode == 8
    assert refused.stderr == (
        "qctl: a QEMU may still run for domain 'alive' (its process or its monitor socket is "
        "alive): end it first\n"
    )
    assert [r["name"] for r in json.loads(run_qctl("list", "--json", state=state).stdout)] == [
        "alive"
    ]
