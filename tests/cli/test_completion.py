"""Shell completion: ``qctl completion bash|zsh`` and the answers qctl gives the shell."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from support import run_qctl

QCTL = [sys.executable, "-m", "qctl.cli.main"]


def complete(line: str, tmp_path: Path) -> list[str]:
    """What qctl answers a bash completion request for ``line`` (cursor at the end)."""
    answer = tmp_path / "answer"
    env = dict(
        os.environ,
        _ARGCOMPLETE="1",
        _ARGCOMPLETE_SHELL="bash",
        _ARGCOMPLETE_IFS="\n",
        COMP_LINE=line,
        COMP_POINT=str(len(line)),
        _ARGCOMPLETE_STDOUT_FILENAME=str(answer),
    )
    subprocess.run(QCTL, env=env, check=True, timeout=60, capture_output=True)
    return sorted(answer.read_text().split())


def test_verbs_domain_and_network_names_are_completed(tmp_path: Path) -> None:
    state = tmp_path / "state"
    for name in ("lan", "lab"):
        pool = tmp_path / f"{name}.xml"
        pool.write_text(
            f"<network><name>{name}</name><forward mode='bridge'/><bridge name='br0'/></network>"
        )
        run_qctl("net-define", str(pool), state=state)
    domain = state / "domains" / "vm1"
    domain.mkdir(parents=True)
    (domain / "status.json").write_text("{}")

    assert complete("qctl net-l", tmp_path) == ["net-list"]
    assert complete(f"qctl --state-dir {state} net-undefine la", tmp_path) == ["lab", "lan"]
    assert complete(f"qctl --state-dir {state} dumpxml v", tmp_path) == ["vm1"]
    assert "vm1" in complete(f"qctl domiflist --state-dir {state} ", tmp_path)


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_the_shell_code_registers_qctl(shell: str) -> None:
    code = subprocess.run(
        [*QCTL, "completion", shell], capture_output=True, text=True, check=True
    ).stdout
    assert "qctl" in code and "_ARGCOMPLETE" in code
    if shell == "bash":  # the code must at least be valid for the shell it is for
        subprocess.run(["bash", "-n"], input=code, text=True, check=True)
