"""What the domains of one state root hold across each other: host PCI devices and pool VFs.

Two kinds of claim cross domains:

* a host PCI device (a VF, any VFIO function) belongs to at most one domain. A domain
  checks what the others hold and records its claim under the state root's devices lock
  (:func:`devices_lock`), so two domains never take the same device at once. The claims
  are kept in an index (``ROOT/devices.json``, written before the claiming domain's
  ledger), so a check reads the index and the ledgers of the domains it names — never
  every domain's status file. The claiming ledger stays the truth: a claim its ledger no
  longer has (released, or a start that failed) is stale and dropped on the next check;
* a network pool's resources are handed out by :class:`~qctl.qemu.network.NetworkStore`
  under its own lock, and given back only to the domain and device that hold them.

The driver asks this module, and only this module, about either.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator

from qctl.errors import StateError
from qctl.qemu.ledger import Ledger
from qctl.qemu.network import Allocation, NetworkStore
from qctl.qemu.state import StateRoot
from qctl.qemu.summary import read_summary
from qctl.qemu.txn import LOCK_TIMEOUT
from qctl.types import PCIAddress

__all__ = [
    "claim_devices",
    "devices_held",
    "devices_in_use",
    "devices_lock",
    "stray_allocations",
]

log = logging.getLogger(__name__)


@contextlib.asynccontextmanager
async def devices_lock(root: StateRoot) -> AsyncIterator[None]:
    """Hold the state root's lock on host device claims (LOCK_TIMEOUT at most).

    Hold it from checking what the other domains hold until the new claim is in the
    claiming domain's status file.
    """
    try:
        async with asyncio.timeout(LOCK_TIMEOUT):
            lock = await root.lock("", ".devices.lock")
    except TimeoutError:
        raise StateError("host device claims are locked by another qctl process") from None
    try:
        yield
    finally:
        lock.release()


def _read_index(root: StateRoot) -> dict[str, str] | None:
    """The claims index (address → ``domain/alias``); None when missing or damaged."""
    try:
        raw = root.read("", "devices.json")
        if raw is None:
            return None
        data = json.loads(raw)
    except (OSError, ValueError):
        log.warning("state root %s: damaged devices.json, rebuilt", root.path)
        return None
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and "/" in v for k, v in data.items()
    ):
        return None
    return data


def _write_index(root: StateRoot, index: dict[str, str]) -> None:
    root.write("", "devices.json", json.dumps(index, sort_keys=True).encode())


def _scan(root: StateRoot) -> dict[str, str]:
    """The claims of every domain's ledger: how the index is rebuilt when it is missing."""
    index: dict[str, str] = {}
    for name in root.names():
        try:
            ledger = read_summary(root.domain(name)).ledger
        except StateError:
            continue
        index.update({str(a): owner for a, owner in _claims(name, ledger).items()})
    return index


def _holds(root: StateRoot, owner: str, address: str) -> bool:
    """Whether the claiming domain's ledger still holds ``address`` under that alias."""
    name, alias = owner.split("/", 1)
    try:
        entry = read_summary(root.domain(name)).ledger.get(alias)
    except StateError:
        return False
    return entry is not None and entry.host_device == address


def devices_held(root: StateRoot, *, besides: str | None = None) -> dict[PCIAddress, str]:
    """Host PCI devices the domains of ``root`` hold, as ``domain/alias`` (call it under
    :func:`devices_lock`). ``besides`` leaves out one domain (the caller's own)."""
    index = _read_index(root)
    if index is None:
        index = _scan(root)
        _write_index(root, index)
    live = {address: owner for address, owner in index.items() if _holds(root, owner, address)}
    if live != index:
        _write_index(root, live)  # drop stale claims
    return {
        PCIAddress.parse(address): owner
        for address, owner in live.items()
        if owner.split("/", 1)[0] != besides
    }


def claim_devices(root: StateRoot, claims: dict[PCIAddress, str]) -> None:
    """Add ``claims`` (address → ``domain/alias``) to the index, before the claiming ledger
    records them (call it under :func:`devices_lock`)."""
    if not claims:
        return
    index = _read_index(root)
    if index is None:
        index = _scan(root)
    index.update({str(address): owner for address, owner in claims.items()})
    _write_index(root, index)


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
