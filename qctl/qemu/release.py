"""Giving back what a device held on the host, from its ledger entry alone.

Used when a device is detached, when an attach is rolled back by reconciliation, and when
QEMU is found gone (by the handle that watched it, or by a process that connects later).
Every step tolerates "already gone", so releasing twice, or after a crash, is safe.
"""

from __future__ import annotations

from qctl.host import LinkControl, Netlink, delete_tap
from qctl.qemu.ledger import Ledger, LedgerEntry

__all__ = ["release_entry", "release_ledger"]


async def release_entry(entry: LedgerEntry, *, netlink: LinkControl) -> None:
    """Free the host resources of one device."""
    if entry.tap:
        await delete_tap(entry.tap, netlink=netlink)


async def release_ledger(ledger: Ledger, *, netlink: LinkControl | None) -> None:
    """Free the host resources of every device in ``ledger`` (a netlink is opened if needed)."""
    entries = list(ledger)
    if not entries:
        return
    if netlink is not None:
        for entry in entries:
            await release_entry(entry, netlink=netlink)
        return
    async with Netlink() as own:
        for entry in entries:
            await release_entry(entry, netlink=own)
