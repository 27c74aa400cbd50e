"""A link's traffic counters, as the kernel reports them in ``/proc/net/dev``.

``qctl domifstat`` reads them for a NIC's tap, as ``virsh domifstat`` does: the host's view,
so ``rx`` is what the host received from the guest and ``tx`` what it sent to it.

Why ``/proc/net/dev`` and not ``/sys/class/net/NAME/statistics``: sysfs shows the links of
the network namespace it was *mounted* in, while ``/proc/net`` follows the namespace of the
reading process, which is where qctl created the tap (under ``unshare --net`` the two
differ, and sysfs would show another namespace's link of the same name, or none).
"""

from __future__ import annotations

from pathlib import Path

from qctl.record import record

from ..errors import HostError
from .oserror import errno_text

__all__ = ["PROC_NET_DEV", "LinkStats", "link_stats"]

PROC_NET_DEV = Path("/proc/net/dev")
"""The kernel's per-link counters for the caller's network namespace."""

# Columns of /proc/net/dev after "NAME:": 8 receive counters, then 8 transmit counters.
_RX_COLUMNS = 8
_USED = {0: "bytes", 1: "packets", 2: "errs", 3: "drop"}


@record
class LinkStats:
    """The kernel's counters of one link (named as ``virsh domifstat`` names them)."""

    name: str
    rx_bytes: int
    rx_packets: int
    rx_errs: int
    rx_drop: int
    tx_bytes: int
    tx_packets: int
    tx_errs: int
    tx_drop: int


def link_stats(name: str, *, source: Path = PROC_NET_DEV) -> LinkStats:
    """The counters of link ``name``; :class:`HostError` when there is no such link in this
    network namespace, or the counters cannot be read."""
    try:
        text = source.read_text()
    except OSError as exc:
        raise HostError(f"cannot read {source}: {errno_text(exc.errno, exc.strerror)}") from exc
    for line in text.splitlines()[2:]:
        link, sep, rest = line.partition(":")
        if not sep or link.strip() != name:
            continue
        columns = rest.split()
        try:
            numbers = [int(c) for c in columns]
        except ValueError:
            numbers = []
        if len(numbers) < 2 * _RX_COLUMNS:
            raise HostError(f"{source}: cannot read the counters of {name}: {line.strip()!r}")
        values = {f"rx_{key}": numbers[i] for i, key in _USED.items()}
        values |= {f"tx_{key}": numbers[_RX_COLUMNS + i] for i, key in _USED.items()}
        return LinkStats(name=name, **values)
    raise HostError(f"no link named {name!r} in this network namespace ({source})")
