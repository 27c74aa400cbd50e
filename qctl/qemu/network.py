"""Network pools: ``<network>`` definitions and who holds which of their devices.

``<interface type='network'>`` draws from a pool by name: a bridge (forward mode bridge,
shared by every NIC) or a set of host PCI devices (forward mode hostdev: the VFs of a PF
found in sysfs, or an explicit list), each given to one interface at a time.

Definitions live as XML files in ``ROOT/networks/NAME.xml``; allocations in
``ROOT/networks/allocations.json`` (network → device → domain and alias). Both are written
atomically, and allocation happens under a file lock, so it is exclusive across qctl
processes and survives controller restarts; a device's ledger entry records its allocation
so whoever releases the device returns it.

A damaged ``allocations.json`` (not JSON, wrong types) fails only pool operations (allocate,
release, undefine, and the listings that show holders), each with one line naming the file
and what is wrong: fix the file or delete it (every device then counts as free). Reading
it for anything else (a domain reconciling its own holdings) skips what is damaged, with a
warning. An allocation whose domain is gone (no state directory) or whose QEMU is dead is
stale: allocating and ``net-undefine`` take it back, so a crash between an allocation and
the ledger write that records it never holds a device for good.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

from qctl.conf import ForwardMode, NetworkDef, format_xml, parse_network
from qctl.errors import ConfigError, ResourceBusyError, StateError
from qctl.host import Sysfs, list_vfs
from qctl.qemu.orphan import start_under_way
from qctl.qemu.state import StateRoot
from qctl.record import record
from qctl.types import OBJECT_NAME_RULE, is_object_name

__all__ = ["Allocation", "NetworkStore", "VFLister"]

log = logging.getLogger(__name__)

_LOCK_TIMEOUT = 30.0
_FOLDER = "networks"
_ALLOCATIONS = "allocations.json"

#: the VFs (PCI addresses, in VF order) of a PF netdev, from sysfs
VFLister = Callable[[str], list[str]]


@record
class Allocation:
    """A pool device held by one domain's interface."""

    network: str
    device: str
    domain: str
    alias: str

    @classmethod
    def from_json(cls, item: Any) -> Allocation:
        """An allocation from its JSON object; ValueError saying what is wrong."""
        if not isinstance(item, dict):
            raise ValueError(f"expected an object, not {type(item).__name__}")
        names = [f.name for f in fields(cls)]
        for name in names:
            if not isinstance(item.get(name), str):
                raise ValueError(f"{name!r} must be a string, not {item.get(name)!r}")
        return cls(*(item[name] for name in names))


def _no_vfs(pf: str) -> list[str]:
    raise StateError(f"cannot list the VFs of {pf}: no sysfs reader was given")


class NetworkStore:
    """The pools defined in one state root, and their allocations."""

    def __init__(self, root: StateRoot, *, vfs_of: VFLister = _no_vfs) -> None:
        self.root = root
        self.path = root.path / _FOLDER
        self._vfs_of = vfs_of

    @classmethod
    def for_host(cls, root: StateRoot, sysfs: Sysfs | None = None) -> NetworkStore:
        """The pools of ``root``, finding a PF's VFs in ``sysfs`` (the host's by default)."""
        tree = sysfs or Sysfs()
        return cls(root, vfs_of=lambda pf: [str(vf.address) for vf in list_vfs(pf, sysfs=tree)])

    # -- definitions ---------------------------------------------------------------------
    def _file(self, name: str) -> str:
        if not is_object_name(name):
            raise ConfigError(f"network name {name!r} is not usable ({OBJECT_NAME_RULE})")
        return f"{name}.xml"

    def define(self, network: NetworkDef) -> None:
        """Store ``network``, replacing a pool of the same name."""
        self.root.write(_FOLDER, self._file(network.name), format_xml(network).encode(), 0o644)

    def get(self, name: str) -> NetworkDef:
        """The pool called ``name``; StateError when none is defined."""
        file = self._file(name)
        text = self.root.read(_FOLDER, file)
        if text is None:
            raise StateError(f"no network named {name!r} is defined (qctl net-define)")
        return parse_network(text, source=str(self.path / file))

    def names(self) -> list[str]:
        """Names of the defined pools, sorted."""
        entries = self.root.listdir(_FOLDER)
        return sorted(e[:-4] for e in entries if e.endswith(".xml") and is_object_name(e[:-4]))

    def undefine(self, name: str) -> None:
        """Forget the pool ``name``; refused while a live domain holds any of its devices
        (allocations of dead or vanished domains are taken back)."""
        file = self._file(name)
        if name not in self.names():
            raise StateError(f"no network named {name!r} is defined (qctl net-list)")
        with self.root.locked(_FOLDER, ".allocations.lock"):
            held = self._read(strict=True)
            mine = [a for a in held if a.network == name]
            live = [a for a in mine if not self._stale(a)]
            if live:
                users = ", ".join(f"{a.domain}/{a.alias}" for a in live)
                raise ResourceBusyError(f"network {name!r} is in use by {users}")
            if mine:
                self._reclaim(mine)
                self._write([a for a in held if a.network != name])
            self.root.unlink(_FOLDER, file)

    def devices(self, network: NetworkDef) -> list[str]:
        """The host devices a hostdev pool hands out, in order (empty for a bridge pool)."""
        forward = network.forward
        if forward is None or forward.mode is not ForwardMode.HOSTDEV:
            return []
        if forward.pf is not None:
            return self._vfs_of(str(forward.pf))
        return [str(address) for address in forward.addresses]

    # -- allocations ---------------------------------------------------------------------
    @property
    def _allocations_file(self) -> Path:
        return self.path / _ALLOCATIONS

    def allocations(self, *, strict: bool = False) -> list[Allocation]:
        """Every device held from any pool.

        A damaged file is a :class:`StateError` naming it with ``strict``; without, what can
        be read is returned and the damage logged (a domain looking for its own holdings
        must not fail for a file it may not even use).
        """
        return self._read(strict=strict)

    def _read(self, *, strict: bool) -> list[Allocation]:
        if not strict and not os.path.lexists(self._allocations_file):
            return []  # nothing ever taken from a pool (one lstat, not the checked walk)
        raw = self.root.read(_FOLDER, _ALLOCATIONS)
        if raw is None:
            return []
        found: list[Allocation] = []
        problem: str | None = None
        try:
            data = json.loads(raw)
        except ValueError as exc:
            data, problem = [], f"not JSON ({exc})"
        if not isinstance(data, list):
            data, problem = [], f"expected a list, not {type(data).__name__}"
        for number, item in enumerate(data, 1):
            try:
                found.append(Allocation.from_json(item))
            except ValueError as exc:
                problem = problem or f"entry {number}: {exc}"
        if problem is not None:
            message = f"{self._allocations_file} is damaged: {problem}; fix or delete it"
            if strict:
                raise StateError(message)
            log.warning("%s", message)
        return found

    def _write(self, allocations: list[Allocation]) -> None:
        data = [
            {"network": a.network, "device": a.device, "domain": a.domain, "alias": a.alias}
            for a in allocations
        ]
        self.root.write(_FOLDER, _ALLOCATIONS, json.dumps(data, indent=1).encode())

    def _stale(self, held: Allocation) -> bool:
        """Whether ``held``'s domain is gone: no state, or no QEMU alive for it (a domain whose
        start is under way holds what it took)."""
        try:
            directory = self.root.domain(held.domain)
            return not start_under_way(directory) and not directory.qemu_lives()
        except StateError as exc:
            return str(exc).startswith("no domain named") or "not usable" in str(exc)

    def _reclaim(self, stale: list[Allocation]) -> None:
        for held in stale:
            log.warning(
                "network %s: taking back %s from %s/%s, whose QEMU is gone",
                held.network,
                held.device,
                held.domain,
                held.alias,
            )

    @contextlib.asynccontextmanager
    async def _locked(self) -> AsyncIterator[None]:
        try:
            async with asyncio.timeout(_LOCK_TIMEOUT):
                lock = await self.root.lock(_FOLDER, ".allocations.lock")
        except TimeoutError:
            raise StateError("the network pools are locked by another qctl process") from None
        try:
            yield
        finally:
            lock.release()

    async def allocate(self, name: str, domain: str, alias: str) -> str:
        """Give one free device of hostdev pool ``name`` to ``domain``'s interface ``alias``.

        A device held by a domain whose QEMU is gone counts as free (and is taken back).
        """
        network = self.get(name)
        async with self._locked():
            held = self._read(strict=True)
            stale = [a for a in held if a.network == name and self._stale(a)]
            kept = [a for a in held if a not in stale]
            taken = {a.device for a in kept if a.network == name}
            for device in self.devices(network):
                if device not in taken:
                    self._reclaim(stale)
                    self._write([*kept, Allocation(name, device, domain, alias)])
                    return device
        raise ResourceBusyError(f"network {name!r} has no free device left")

    async def release(
        self, name: str, device: str, *, domain: str | None = None, alias: str | None = None
    ) -> None:
        """Return ``device`` to pool ``name`` (no error if it was not held).

        With ``domain`` and ``alias``, only if that interface still holds it: a device
        given back and handed to another domain since is left alone.
        """

        def released(held: Allocation) -> bool:
            if held.network != name or held.device != device:
                return False
            return (domain is None or held.domain == domain) and (
                alias is None or held.alias == alias
            )

        async with self._locked():
            held = self._read(strict=True)
            kept = [a for a in held if not released(a)]
            if len(kept) != len(held):
                self._write(kept)
