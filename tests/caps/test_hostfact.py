"""Host facts: which device nodes open read-write, found by trying."""

from __future__ import annotations

from pathlib import Path

from qctl.caps import HostFacts, host_facts


def test_a_node_counts_when_it_opens_read_write(tmp_path: Path) -> None:
    usable = tmp_path / "node"
    usable.write_text("")
    facts = host_facts(vhost_net_path=str(usable), tun_path=str(tmp_path / "absent"))
    assert facts == HostFacts(vhost_net=True, tun=False)


def test_a_node_that_does_not_open_read_write_does_not_count(tmp_path: Path) -> None:
    facts = host_facts(vhost_net_path=str(tmp_path), tun_path=str(tmp_path / "absent"))
    assert facts == HostFacts(vhost_net=False, tun=False)  # a directory, a missing node
