"""Typed events of a running domain, and the bounded streams that deliver them.

QEMU's events are translated into small frozen classes (a device went away, the guest
refused an unplug, a NIC's RX filter changed, the guest shut down); qctl adds its own
``DeviceAdded`` when an attach completes, since QEMU has no event for that. Each stream made
by :meth:`Domain.events` keeps at most ``maxsize`` unread events, dropping the oldest, so a
slow reader never makes the domain's event loop wait or grow.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Self

from qctl.qmp import QMPEvent

__all__ = [
    "DeviceAdded",
    "DeviceRemoved",
    "DomainEvent",
    "EventStream",
    "NICRxFilterChanged",
    "OtherEvent",
    "Shutdown",
    "UnplugRejected",
    "from_qmp",
]


@dataclass(frozen=True, slots=True)
class DomainEvent:
    """Something that happened to a domain; ``timestamp`` is QEMU's (None for qctl's own)."""

    timestamp: float | None


@dataclass(frozen=True, slots=True)
class DeviceAdded(DomainEvent):
    """qctl finished attaching the device ``alias``."""

    alias: str


@dataclass(frozen=True, slots=True)
class DeviceRemoved(DomainEvent):
    """QEMU removed the device ``alias`` (DEVICE_DELETED)."""

    alias: str


@dataclass(frozen=True, slots=True)
class UnplugRejected(DomainEvent):
    """The guest refused to release the device ``alias`` (DEVICE_UNPLUG_GUEST_ERROR)."""

    alias: str


@dataclass(frozen=True, slots=True)
class NICRxFilterChanged(DomainEvent):
    """The guest changed the RX filter (MAC, multicast list) of NIC ``alias``."""

    alias: str


@dataclass(frozen=True, slots=True)
class Shutdown(DomainEvent):
    """QEMU is shutting down; ``guest`` says whether the guest asked for it."""

    guest: bool
    reason: str


@dataclass(frozen=True, slots=True)
class OtherEvent(DomainEvent):
    """Any other QEMU event, by name, with its data."""

    name: str
    data: dict[str, Any] = field(default_factory=dict)


def _device_alias(event: QMPEvent) -> str | None:
    """The device id an event names; None for events about unnamed internal devices."""
    device = event.data.get("device")
    return str(device) if device else None


def from_qmp(event: QMPEvent) -> DomainEvent | None:
    """The typed form of a QEMU event; None for device events without a device id
    (QEMU also announces the removal of a virtio NIC's internal, unnamed parts)."""
    stamp = event.timestamp
    if event.name in ("DEVICE_DELETED", "DEVICE_UNPLUG_GUEST_ERROR"):
        alias = _device_alias(event)
        if alias is None:
            return None
        kind = DeviceRemoved if event.name == "DEVICE_DELETED" else UnplugRejected
        return kind(stamp, alias)
    if event.name == "NIC_RX_FILTER_CHANGED":
        return NICRxFilterChanged(stamp, str(event.data.get("name", "")))
    if event.name == "SHUTDOWN":
        return Shutdown(stamp, bool(event.data.get("guest")), str(event.data.get("reason", "")))
    return OtherEvent(stamp, event.name, dict(event.data))


class EventStream:
    """An async iterator of a domain's events, from its creation on, bounded.

    Ends when the domain's handle closes or QEMU exits (after the queued events).
    """

    def __init__(self, maxsize: int, on_close: Any) -> None:
        self._queue: deque[DomainEvent] = deque()
        self._maxsize = maxsize
        self._on_close = on_close
        self._wakeup = asyncio.Event()
        self._ended = False
        self.dropped = 0

    def deliver(self, event: DomainEvent) -> None:
        """Queue ``event``, dropping the oldest one when full."""
        if self._ended:
            return
        if len(self._queue) >= self._maxsize:
            self._queue.popleft()
            self.dropped += 1
        self._queue.append(event)
        self._wakeup.set()

    def end(self) -> None:
        """No more events will come."""
        self._ended = True
        self._wakeup.set()

    def close(self) -> None:
        """Stop receiving events (idempotent)."""
        if not self._ended:
            self.end()
            self._on_close(self)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> DomainEvent:
        while not self._queue:
            if self._ended:
                raise StopAsyncIteration
            self._wakeup.clear()
            await self._wakeup.wait()
        return self._queue.popleft()
