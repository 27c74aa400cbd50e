"""Giving back what a device held on the host, from its ledger entry alone.

Used when a device is detached, when an attach is rolled back by reconciliation, and when
QEMU is found gone (by the handle that watched it, or by a process that connects later).
In order: the tap, the VFIO device's host driver and its VF settings, the pool allocation.
Every step tolerates "already gone", so releasing twice, or after a crash, is safe.
"""

from __future__ import annotations

import os

from qctl.errors import QctlError
from qctl.host import LinkControl, Netlink, PCIDevice, Sysfs, delete_tap
from qctl.qemu.confine import VFIO_DIR, take_back_vfio_group
from qctl.qemu.ledger import Ledger, LedgerEntry
from qctl.qemu.network import NetworkStore
from qctl.qemu.vfio import release_vfio
from qctl.record import record
from qctl.types import PCIAddress

__all__ = ["HostSide", "release_all", "release_entry", "release_ledger"]


@record
class HostSide:
    """Where released resources go back to: netlink, sysfs and the network pools, and the
    domain whose books these are."""

    netlink: LinkControl
    sysfs: Sysfs
    networks: NetworkStore
    domain: str
    vfio_dir: str = VFIO_DIR


async def release_entry(entry: LedgerEntry, host: HostSide) -> None:
    """Free the host resources of one device."""
    if entry.tap:
        await delete_tap(entry.tap, netlink=host.netlink, index=entry.tap_index)
    await release_vfio(entry, netlink=host.netlink, sysfs=host.sysfs)
    if entry.host_device is not None and os.geteuid() == 0:  # a confined QEMU had its group
        group = PCIDevice(PCIAddress.parse(entry.host_device), sysfs=host.sysfs).iommu_group()
        if group is not None:
            take_back_vfio_group(group, vfio_dir=host.vfio_dir)
    if entry.pool is not None:
        network, device = entry.pool
        await host.networks.release(network, device, domain=host.domain, alias=entry.alias)


async def release_ledger(ledger: Ledger, host: HostSide) -> list[Exception]:
    """Free the host resources of every device in ``ledger``, going on past failures.

    Returns the failures (empty when everything was given back), so the caller decides
    what to keep: the state that records what is still held.
    """
    failures: list[Exception] = []
    for entry in ledger:
        try:
            await release_entry(entry, host)
        except QctlError as exc:
            exc.add_note(f"while releasing {entry.alias} of domain {host.domain}")
            failures.append(exc)
    return failures


async def release_all(
    ledger: Ledger,
    *,
    domain: str,
    netlink: LinkControl | None,
    sysfs: Sysfs,
    networks: NetworkStore,
) -> list[Exception]:
    """:func:`release_ledger`, opening a netlink socket for the purpose when none is given."""
    if netlink is not None:
        return await release_ledger(ledger, HostSide(netlink, sysfs, networks, domain))
    async with Netlink() as own:
        return await release_ledger(ledger, HostSide(own, sysfs, networks, domain))
