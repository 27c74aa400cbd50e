"""A link's counters from /proc/net/dev (a fake file: the format is the kernel's)."""

from __future__ import annotations

from pathlib import Path

import pytest

from qctl.errors import HostError
from qctl.host import LinkStats, link_stats

PROC_NET_DEV = """\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:     100       2    0    0    0     0          0         0      100       2    0    0    0     0       0          0
vnet10: 1234567    890    1    2    0     0          0         0   765432     321    3    4    0     0       0          0
"""  # noqa: E501 - the kernel's own line


def test_counters_are_read_by_link_name(tmp_path: Path) -> None:
    source = tmp_path / "dev"
    source.write_text(PROC_NET_DEV)
    assert link_stats("vnet10", source=source) == LinkStats(
        name="vnet10",
        rx_bytes=1234567,
        rx_packets=890,
        rx_errs=1,
        rx_drop=2,
        tx_bytes=765432,
        tx_packets=321,
        tx_errs=3,
        tx_drop=4,
    )


def test_an_unknown_link_is_named(tmp_path: Path) -> None:
    source = tmp_path / "dev"
    source.write_text(PROC_NET_DEV)
    with pytest.raises(HostError, match=r"no link named 'vnet1' in this network namespace"):
        link_stats("vnet1", source=source)


def test_a_garbled_line_is_reported(tmp_path: Path) -> None:
    source = tmp_path / "dev"
    source.write_text(PROC_NET_DEV.replace("1234567", "x"))
    with pytest.raises(HostError, match=r"cannot read the counters of vnet10"):
        link_stats("vnet10", source=source)


def test_the_real_file_has_loopback() -> None:
    assert link_stats("lo").rx_bytes >= 0
