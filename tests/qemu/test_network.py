"""Pool allocations when ``allocations.json`` is damaged or held by dead domains (issue 11,
items 4 and 5)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
from support import pretend_running, run_qctl

from qctl.conf import parse_network
from qctl.errors import ResourceBusyError, StateError
from qctl.qemu.network import NetworkStore
from qctl.qemu.state import StateRoot

ONE_VF = """<network>
  <name>vfs</name>
  <forward mode='hostdev' managed='yes'>
    <address type='pci' domain='0x0000' bus='0x3b' slot='0x10' function='0x0'/>
  </forward>
</network>"""
VF = "0000:3b:10.0"


@pytest.fixture
def store(tmp_path: Path) -> NetworkStore:
    networks = NetworkStore(StateRoot(tmp_path / "state"))
    networks.define(parse_network(ONE_VF))
    return networks


def _damage(store: NetworkStore, text: str) -> Path:
    path = store.path / "allocations.json"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("{not json", "not JSON (Expecting property name"),
        ('{"vfs": 1}', "expected a list, not dict"),
        ("[1]", "entry 1: expected an object, not int"),
        ('[{"network": "vfs", "device": 7, "domain": "a", "alias": "b"}]',
         "entry 1: 'device' must be a string, not 7"),
    ],
)
async def test_damage_fails_pool_operations_in_one_line(
    store: NetworkStore, text: str, problem: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = _damage(store, text)
    expected = f"{path} is damaged: {problem}"
    with pytest.raises(StateError) as allocating:
        await store.allocate("vfs", "vm", "hostdev0")
    assert str(allocating.value).startswith(expected)
    assert str(allocating.value).endswith("; fix or delete it")
    with pytest.raises(StateError, match="is damaged"):
        await store.release("vfs", VF)
    with pytest.raises(StateError, match="is damaged"):
        store.undefine("vfs")
    # What does not change the pools reads past the damage, with a warning.
    with caplog.at_level(logging.WARNING):
        assert store.allocations() == []
    assert expected in caplog.text


async def test_a_deleted_file_frees_every_device(store: NetworkStore) -> None:
    _damage(store, "{not json").unlink()
    assert await store.allocate("vfs", "vm", "hostdev0") == VF


async def test_a_device_of_a_vanished_domain_is_taken_back(store: NetworkStore) -> None:
    assert await store.allocate("vfs", "crashed", "hostdev0") == VF
    # The CLI was killed before the ledger recorded it; the domain has no state at all.
    assert await store.allocate("vfs", "vm2", "hostdev0") == VF
    assert [(a.domain, a.alias) for a in store.allocations()] == [("vm2", "hostdev0")]


async def test_a_device_of_a_domain_whose_qemu_died_is_taken_back(
    store: NetworkStore, tmp_path: Path
) -> None:
    directory = store.root.domain("crashed")
    directory.make()
    directory.write_status({"name": "crashed", "pid": 2**22 + 1, "start_time": 1})
    assert await store.allocate("vfs", "crashed", "hostdev0") == VF
    store.undefine("vfs")  # not refused for good
    assert store.names() == [] and store.allocations() == []


async def test_a_device_of_a_live_domain_stays_held(store: NetworkStore, tmp_path: Path) -> None:
    pretend_running(tmp_path / "state", "alive")
    assert await store.allocate("vfs", "alive", "hostdev0") == VF
    with pytest.raises(ResourceBusyError, match="no free device left"):
        await store.allocate("vfs", "other", "hostdev0")
    with pytest.raises(ResourceBusyError, match="in use by alive/hostdev0"):
        store.undefine("vfs")


def test_cli_reports_a_damaged_file_in_one_line(store: NetworkStore, tmp_path: Path) -> None:
    path = _damage(store, '[{"network": []}]')
    for command in (["net-list"], ["net-dumpxml", "vfs"], ["net-undefine", "vfs"]):
        result = run_qctl(*command, state=tmp_path / "state", check=False)
        assert result.returncode == 8, command
        assert result.stderr == (
            f"qctl: {path} is damaged: entry 1: 'network' must be a string, not []; "
            "fix or delete it\n"
        )
    assert json.loads(path.read_text()) == [{"network": []}]  # left for the user to repair
    assert os.path.exists(store.path / "vfs.xml")


def test_no_allocations_file_is_no_allocation_without_the_checked_walk(
    store: NetworkStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    def walked(*args: object) -> bytes:
        raise AssertionError("the state root was walked for a file that does not exist")

    monkeypatch.setattr(store.root, "read", walked)
    assert store.allocations() == []  # what every connect's reconciling asks
    with pytest.raises(AssertionError):  # strict: the checked read, which vouches for the tree
        store.allocations(strict=True)
