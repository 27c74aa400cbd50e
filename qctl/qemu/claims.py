"""What the domains of one state root hold across each other: host PCI devices and pool VFs.

Two kinds of claim cross domains:

* a host PCI device (a VF, any VFIO function) belongs to at most one domain. Each domain
  checks the others' ledgers and records its own claim under the state root's devices lock
  (:func:`devices_lock`), so two domains never take the same device at once;
* a network pool's resources are handed out by :class:`~qctl.qemu.network.NetworkStore`
  under its own lock, and given back only to the domain and device that hold them.

The driver asks this module, and only this module, about either.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from qctl.errors import StateError
from qctl.qemu.ledger import Ledger
from qctl.qemu.network import Allocation, NetworkStore
from qctl.qemu.state import StateRoot, lock_file
from qctl.qemu.status import read_status
from qctl.qemu.txn import LOCK_TIMEOUT
from qctl.types import PCIAddress

__all__ = ["devices_held", "devices_in_use", "devices_lock", "stray_allocations"]


@contextlib.asynccontextmanager
async def devices_lock(root: StateRoot) -> AsyncIterator[None]:
    """Hold the state root's lock on host device claims (LOCK_TIMEOUT at most).

    Hold it from checking what the other domains hold until the new claim is in the
    claiming domain's status file.
    """
    root.ensure()
    try:
        async with asyncio.timeout(LOCK_TIMEOUT):
            lock = await lock_file(root.path / ".devices.lock")
    except TimeoutError:
        raise StateError("host device claims are locked by another qctl process") from None
    try:
        yield
    finally:
        lock.release()


def devices_held(root: StateRoot, *, besides: str | None = None) -> dict[PCIAddress, str]:
    """Host PCI devices the ledgers of ``root``'s domains hold, as ``domain/alias``.

    ``besides`` leaves out one domain (the caller's own, whose ledger it has in memory).
    """
    held: dict[PCIAddress, str] = {}
    for name in root.names():
        if name == besides:
            continue
        try:
            ledger = read_status(root.domain(name)).ledger
        except StateError:
            continue
        held.update(_claims(name, ledger))
    return held


def devices_in_use(root: StateRoot, name: str, ledger: Ledger) -> dict[PCIAddress, str]:
    """Host PCI devices held by any domain of ``root``, domain ``name`` by ``ledger``."""
    held = devices_held(root, besides=name)
    held.update(_claims(name, ledger))
    return held


def _claims(name: str, ledger: Ledger) -> dict[PCIAddress, str]:
    return {
        PCIAddress.parse(entry.host_device): f"{name}/{entry.alias}"
        for entry in ledger
        if entry.host_device
    }


def stray_allocations(networks: NetworkStore, name: str, ledger: Ledger) -> list[Allocation]:
    """Pool allocations of domain ``name`` that its ledger does not know: taken just before
    a crash, never recorded, so nothing else would ever give them back."""
    return [a for a in networks.allocations() if a.domain == name and a.alias not in ledger]
