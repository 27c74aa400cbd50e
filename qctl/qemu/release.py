"""Giving back what a device held on the host, from its ledger entry alone.

Used when a device is detached, when an attach is rolled back by reconciliation, and when
QEMU is found gone (by the handle that watched it, or by a process that connects later).
In order: the tap, the VFIO device's host driver and its VF settings, the pool allocation.
Every step tolerates "already gone", so releasing twice, or after a crash, is safe.
"""

from __future__ import annotations

from dataclasses import dataclass

from qctl.host import LinkControl, Netlink, Sysfs, delete_tap
from qctl.qemu.ledger import Ledger, LedgerEntry
from qctl.qemu.network import NetworkStore
from qctl.qemu.vfio import release_vfio

__all__ = ["HostSide", "release_entry", "release_ledger"]


@dataclass(frozen=True, slots=True)
class HostSide:
    """Where released resources go back to: netlink, sysfs and the network pools."""

    netlink: LinkControl
    sysfs: Sysfs
    networks: NetworkStore


async def release_entry(entry: LedgerEntry, host: HostSide) -> None:
    """Free the host resources of one device."""
    if entry.tap:
        await delete_tap(entry.tap, netlink=host.netlink)
    await release_vfio(entry, netlink=host.netlink, sysfs=host.sysfs)
    if entry.pool is not None:
        await host.networks.release(*entry.pool)


async def release_ledger(
    ledger: Ledger, *, netlink: LinkControl | None, sysfs: Sysfs, networks: NetworkStore
) -> None:
    """Free the host resources of every device in ``ledger`` (a netlink is opened if needed)."""
    entries = list(ledger)
    if not entries:
        return
    if netlink is not None:
        for entry in entries:
            await release_entry(entry, HostSide(netlink, sysfs, networks))
        return
    async with Netlink() as own:
        for entry in entries:
            await release_entry(entry, HostSide(own, sysfs, networks))
