"""The per-domain ledger: for every device, what QEMU has and which host resources it holds.

The ledger is the truth a later qctl process (or a crash) relies on: it is written to the
status file before each side effect (state ``attaching``/``detaching``) and after it
(``attached``, or the entry removed). An entry whose outcome is unknown is ``uncertain``
and is reconciled against QEMU on the next connect.

Entries are immutable; the ledger itself is a small ordered mapping by device alias that
serializes to JSON and back losslessly.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterator
from typing import Any

from qctl.record import record

__all__ = ["DeviceKind", "EntryState", "Ledger", "LedgerEntry", "SavedVF"]


class EntryState(enum.StrEnum):
    """Where a device stands between qctl and QEMU."""

    ATTACHING = "attaching"
    ATTACHED = "attached"
    DETACHING = "detaching"
    UNCERTAIN = "uncertain"


class DeviceKind(enum.StrEnum):
    """Which lists of the live domain a device lives in."""

    INTERFACE = "interface"
    HOSTDEV = "hostdev"
    #: a ``type='hostdev'`` interface: in both lists, one alias and one address
    HOSTDEV_INTERFACE = "hostdev-interface"


@record
class SavedVF:
    """An SR-IOV VF's admin settings before qctl changed them, to restore on release."""

    pf: str
    vf: int
    mac: str
    vlan: int


@record
class LedgerEntry:
    """One device and every host resource it holds."""

    alias: str
    kind: DeviceKind
    state: EntryState
    netdev_id: str | None = None
    #: tap created for the device (gone once QEMU closes its fds), and its ifindex, so a
    #: later tap that took the name is never mistaken for it
    tap: str | None = None
    tap_index: int | None = None
    #: fd names passed to QEMU with ``getfd`` and not yet closed
    fd_names: tuple[str, ...] = ()
    #: (network name, resource) allocated from a network pool
    pool: tuple[str, str] | None = None
    saved_vf: SavedVF | None = None
    #: guest PCI address ``0000:01:00.0``
    guest_address: str | None = None
    #: host PCI device assigned with VFIO
    host_device: str | None = None
    #: host driver to rebind a managed device to on release
    original_driver: str | None = None
    #: the device's live XML, so the live definition can be rebuilt from the ledger
    device_xml: str | None = None
    #: a hot-plugged device as the request gave it (before a pool or qctl filled anything
    #: in), which the migratable XML maps it back to; ``None`` for devices from the start
    asked_xml: str | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (spelled out: it is written at every hot-plug step)."""
        saved = self.saved_vf
        return {
            "alias": self.alias,
            "kind": self.kind.value,
            "state": self.state.value,
            "netdev_id": self.netdev_id,
            "tap": self.tap,
            "tap_index": self.tap_index,
            "fd_names": list(self.fd_names),
            "pool": list(self.pool) if self.pool else None,
            "saved_vf": (
                {"pf": saved.pf, "vf": saved.vf, "mac": saved.mac, "vlan": saved.vlan}
                if saved
                else None
            ),
            "guest_address": self.guest_address,
            "host_device": self.host_device,
            "original_driver": self.original_driver,
            "device_xml": self.device_xml,
            "asked_xml": self.asked_xml,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LedgerEntry:
        """Rebuild an entry written by :meth:`to_json`."""
        saved = data.get("saved_vf")
        pool = data.get("pool")
        return cls(
            alias=data["alias"],
            kind=DeviceKind(data["kind"]),
            state=EntryState(data["state"]),
            netdev_id=data.get("netdev_id"),
            tap=data.get("tap"),
            tap_index=data.get("tap_index"),
            fd_names=tuple(data.get("fd_names", ())),
            pool=(pool[0], pool[1]) if pool else None,
            saved_vf=SavedVF(**saved) if saved else None,
            guest_address=data.get("guest_address"),
            host_device=data.get("host_device"),
            original_driver=data.get("original_driver"),
            device_xml=data.get("device_xml"),
            asked_xml=data.get("asked_xml"),
        )

    def evolve(self, **changes: Any) -> LedgerEntry:
        """A copy with ``changes`` applied."""
        return dataclasses.replace(self, **changes)


#: how many more changes than entries a ledger remembers before it forgets the oldest
_CHANGES_KEPT = 64


class Ledger:
    """Entries by alias, in the order they were added.

    It counts its changes and remembers which alias each changed last, so a writer of the
    books asks what changed since it last wrote (:meth:`changed_since`) at the cost of
    what changed, not of the whole ledger.
    """

    def __init__(self, entries: dict[str, LedgerEntry] | None = None) -> None:
        self._entries: dict[str, LedgerEntry] = dict(entries or {})
        #: the changes made (puts and removals), counted
        self.changes = 0
        #: the aliases put or removed, by the count of their last change, the last last
        self._changed: dict[str, int] = {}
        #: the latest change that removed an alias put again since (which moved it last)
        self._moved = 0
        #: the latest change no longer in ``_changed`` (see :meth:`_trim`)
        self._forgotten = 0

    def __iter__(self) -> Iterator[LedgerEntry]:
        return iter(list(self._entries.values()))

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, alias: object) -> bool:
        return alias in self._entries

    def get(self, alias: str) -> LedgerEntry | None:
        """The entry for ``alias``, if any."""
        return self._entries.get(alias)

    def put(self, entry: LedgerEntry) -> None:
        """Add or replace the entry for ``entry.alias``."""
        alias = entry.alias
        if alias not in self._entries and alias in self._changed:  # removed, now back last
            self._moved = max(self._moved, self._changed[alias])
        self._entries[alias] = entry
        self._note(alias)

    def remove(self, alias: str) -> None:
        """Drop the entry for ``alias`` (no error if absent)."""
        if self._entries.pop(alias, None) is not None:
            self._note(alias)

    def _note(self, alias: str) -> None:
        self.changes += 1
        self._changed.pop(alias, None)
        self._changed[alias] = self.changes
        if len(self._changed) > 2 * len(self._entries) + _CHANGES_KEPT:
            self._trim()

    def _trim(self) -> None:
        """Forget the oldest changes (of aliases removed long ago, mostly), down to as many
        as there are entries: the aliases an embedder's long life put and removed would
        else be kept for good. Whoever asks about changes older than that is told to
        write everything (:meth:`changed_since`)."""
        while len(self._changed) > len(self._entries):
            alias = next(iter(self._changed))
            self._forgotten = self._changed.pop(alias)

    def changed_since(self, changes: int) -> list[str] | None:
        """The aliases put or removed after the first ``changes`` changes (each once, the
        last changed first); None when one of them was removed and put again, which moved
        it to the end of the ledger (its order changed), or when changes that old are
        forgotten."""
        if self._moved > changes or self._forgotten > changes:
            return None
        changed = []
        for alias in reversed(self._changed):
            if self._changed[alias] <= changes:
                break
            changed.append(alias)
        return changed

    def position(self, alias: str) -> int:
        """Where ``alias`` stands in the ledger's order (ValueError when absent)."""
        return list(self._entries).index(alias)

    def pending(self) -> list[LedgerEntry]:
        """Entries not in a settled state: what reconciliation must finish or undo."""
        return [e for e in self._entries.values() if e.state is not EntryState.ATTACHED]

    def taps(self) -> set[str]:
        """Every tap name the ledger holds."""
        return {e.tap for e in self._entries.values() if e.tap}

    def to_json(self) -> list[dict[str, Any]]:
        """A JSON-ready list."""
        return [e.to_json() for e in self._entries.values()]

    @classmethod
    def from_json(cls, data: list[dict[str, Any]]) -> Ledger:
        """Rebuild a ledger written by :meth:`to_json`."""
        entries = (LedgerEntry.from_json(item) for item in data)
        return cls({e.alias: e for e in entries})
