"""``qctl net-define|net-list|net-dumpxml|net-undefine`` as separate processes."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from support import pretend_running, run_qctl

from qctl import NetworkStore, StateRoot

BRIDGE_POOL = "<network><name>lan</name><forward mode='bridge'/><bridge name='br0'/></network>"
VF_POOL = """<network>
  <name>vfs</name>
  <forward mode='hostdev' managed='yes'>
    <address type='pci' domain='0x0000' bus='0x3b' slot='0x10' function='0x0'/>
    <address type='pci' domain='0x0000' bus='0x3b' slot='0x10' function='0x1'/>
  </forward>
</network>"""


qctl = run_qctl


def test_pools_are_defined_listed_shown_and_undefined(tmp_path: Path) -> None:
    state = tmp_path / "state"
    for name, text in (("lan.xml", BRIDGE_POOL), ("vfs.xml", VF_POOL)):
        (tmp_path / name).write_text(text)
        qctl("net-define", str(tmp_path / name), state=state)
    assert json.loads(qctl("net-list", "--json", state=state).stdout) == [
        {"name": "lan", "mode": "bridge", "held": 0},
        {"name": "vfs", "mode": "hostdev", "held": 0},
    ]
    # A domain's interface takes one VF (as an attach would), and the pool shows who holds it.
    store = NetworkStore(StateRoot(state))
    asyncio.run(store.allocate("vfs", "vm1", "hostdev0"))
    shown = json.loads(qctl("net-dumpxml", "vfs", "--json", state=state).stdout)
    assert shown["devices"] == [
        {"device": "0000:3b:10.0", "domain": "vm1", "alias": "hostdev0"},
        {"device": "0000:3b:10.1", "domain": None, "alias": None},
    ]
    text = qctl("net-dumpxml", "vfs", state=state).stdout
    assert "<!-- 0000:3b:10.0: vm1/hostdev0 -->" in text and "0000:3b:10.1: free" in text
    pretend_running(state, "vm1")
    busy = qctl("net-undefine", "vfs", state=state, check=False)
    assert busy.returncode == 6 and "in use by vm1/hostdev0" in busy.stderr
    asyncio.run(store.release("vfs", "0000:3b:10.0"))
    qctl("net-undefine", "vfs", state=state)
    assert [n["name"] for n in json.loads(qctl("net-list", "--json", state=state).stdout)] == [
        "lan"
    ]


def test_bad_pool_document_is_one_line_with_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.xml"
    bad.write_text("<network>\n  <name>x</name>\n  <forward mode='bridge'/>\n</network>\n")
    result = qctl("net-define", str(bad), state=tmp_path / "state", check=False)
    assert result.returncode == 3
    assert result.stderr.startswith(f"qctl: {bad}:") and len(result.stderr.splitlines()) == 1
