"""Network pools: ``<network>`` definitions and who holds which of their devices.

``<interface type='network'>`` draws from a pool by name: a bridge (forward mode bridge,
shared by every NIC) or a set of host PCI devices (forward mode hostdev: the VFs of a PF
found in sysfs, or an explicit list), each given to one interface at a time.

Definitions live as XML files in ``ROOT/networks/NAME.xml``; allocations in
``ROOT/networks/allocations.json`` (network → device → domain and alias). Both are written
atomically, and allocation happens under a file lock, so it is exclusive across qctl
processes and survives controller restarts; a device's ledger entry records its allocation
so whoever releases the device returns it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

from qctl.conf import ForwardMode, NetworkDef, format_xml, parse_network
from qctl.errors import ConfigError, ResourceBusyError, StateError
from qctl.host import Sysfs, list_vfs
from qctl.qemu.state import StateRoot, atomic_write, check_readable_dir, lock_file

__all__ = ["Allocation", "NetworkStore", "VFLister"]

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$")
_LOCK_TIMEOUT = 30.0

#: the VFs (PCI addresses, in VF order) of a PF netdev, from sysfs
VFLister = Callable[[str], list[str]]


@dataclass(frozen=True, slots=True)
class Allocation:
    """A pool device held by one domain's interface."""

    network: str
    device: str
    domain: str
    alias: str


def _no_vfs(pf: str) -> list[str]:
    raise StateError(f"cannot list the VFs of {pf}: no sysfs reader was given")


class NetworkStore:
    """The pools defined in one state root, and their allocations."""

    def __init__(self, root: StateRoot, *, vfs_of: VFLister = _no_vfs) -> None:
        self.path = root.path / "networks"
        self._vfs_of = vfs_of

    @classmethod
    def for_host(cls, root: StateRoot, sysfs: Sysfs | None = None) -> NetworkStore:
        """The pools of ``root``, finding a PF's VFs in ``sysfs`` (the host's by default)."""
        tree = sysfs or Sysfs()
        return cls(root, vfs_of=lambda pf: [str(vf.address) for vf in list_vfs(pf, sysfs=tree)])

    # -- definitions ---------------------------------------------------------------------
    def _file(self, name: str) -> Path:
        if not _NAME_RE.match(name):
            raise ConfigError(f"network name {name!r} is not usable as a file name")
        return self.path / f"{name}.xml"

    def define(self, network: NetworkDef) -> None:
        """Store ``network``, replacing a pool of the same name."""
        target = self._file(network.name)
        self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        atomic_write(target, format_xml(network).encode(), 0o644)

    def get(self, name: str) -> NetworkDef:
        """The pool called ``name``; StateError when none is defined."""
        path = self._file(name)
        try:
            text = path.read_bytes()
        except FileNotFoundError:
            raise StateError(f"no network named {name!r} is defined (qctl net-define)") from None
        return parse_network(text, source=str(path))

    def names(self) -> list[str]:
        """Names of the defined pools, sorted."""
        check_readable_dir(self.path.parent, "state directory")
        check_readable_dir(self.path, "network directory")
        if not self.path.exists():
            return []
        return sorted(p.stem for p in self.path.glob("*.xml"))

    def undefine(self, name: str) -> None:
        """Forget the pool ``name``; refused while any of its devices is held."""
        held = [a for a in self.allocations() if a.network == name]
        if held:
            users = ", ".join(f"{a.domain}/{a.alias}" for a in held)
            raise ResourceBusyError(f"network {name!r} is in use by {users}")
        try:
            self._file(name).unlink()
        except FileNotFoundError:
            raise StateError(f"no network named {name!r} is defined (qctl net-list)") from None

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
        return self.path / "allocations.json"

    def allocations(self) -> list[Allocation]:
        """Every device held from any pool."""
        try:
            data = json.loads(self._allocations_file.read_bytes())
        except FileNotFoundError:
            return []
        except ValueError as exc:
            raise StateError(f"{self._allocations_file} is damaged: {exc}") from exc
        return [Allocation(**item) for item in data]

    def _write(self, allocations: list[Allocation]) -> None:
        self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        data = [
            {"network": a.network, "device": a.device, "domain": a.domain, "alias": a.alias}
            for a in allocations
        ]
        atomic_write(self._allocations_file, json.dumps(data, indent=1).encode())

    @contextlib.asynccontextmanager
    async def _locked(self) -> AsyncIterator[None]:
        self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            async with asyncio.timeout(_LOCK_TIMEOUT):
                lock = await lock_file(self.path / ".allocations.lock")
        except TimeoutError:
            raise StateError("the network pools are locked by another qctl process") from None
        try:
            yield
        finally:
            lock.release()

    async def allocate(self, name: str, domain: str, alias: str) -> str:
        """Give one free device of hostdev pool ``name`` to ``domain``'s interface ``alias``."""
        network = self.get(name)
        async with self._locked():
            held = self.allocations()
            taken = {a.device for a in held if a.network == name}
            for device in self.devices(network):
                if device not in taken:
                    self._write([*held, Allocation(name, device, domain, alias)])
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
            held = self.allocations()
            kept = [a for a in held if not released(a)]
            if len(kept) != len(held):
                self._write(kept)
