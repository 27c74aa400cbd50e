"""A link's traffic counters, as the kernel keeps them in ``/sys/class/net/NAME/statistics``.

``qctl domifstat`` reads them for a NIC's tap, as ``virsh domifstat`` does: the host's view,
so ``rx`` is what the host received from the guest and ``tx`` what it sent to it.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import SysfsError
from .sysfs import Sysfs

__all__ = ["LinkStats", "link_stats"]

# (field, sysfs attribute) in the order virsh prints them.
_COUNTERS = (
    ("rx_bytes", "rx_bytes"),
    ("rx_packets", "rx_packets"),
    ("rx_errs", "rx_errors"),
    ("rx_drop", "rx_dropped"),
    ("tx_bytes", "tx_bytes"),
    ("tx_packets", "tx_packets"),
    ("tx_errs", "tx_errors"),
    ("tx_drop", "tx_dropped"),
)


@dataclass(frozen=True, slots=True)
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


def link_stats(name: str, sysfs: Sysfs | None = None) -> LinkStats:
    """The counters of link ``name``; :class:`SysfsError` naming the file when one is missing
    (no such link) or unreadable."""
    tree = sysfs or Sysfs()
    base = tree.path("class", "net", name, "statistics")
    values: dict[str, int] = {}
    for field_name, attribute in _COUNTERS:
        path = base / attribute
        text = tree.read(path)
        try:
            values[field_name] = int(text)
        except ValueError:
            raise SysfsError(f"{path}: not a counter: {text!r}", path=str(path)) from None
    return LinkStats(name=name, **values)
