"""Typed events of a running domain, and the hub that hands them out.

QEMU's events are translated into small frozen classes (a device went away, the guest
refused an unplug, a NIC's RX filter changed, the guest shut down); qctl adds its own
``DeviceAdded`` when an attach completes, since QEMU has no event for that.

One pump per QMP connection feeds the :class:`EventHub`, which hands each event to

* every :class:`EventStream` (``Domain.events()``): bounded, dropping the oldest, so a slow
  reader never makes the domain's event loop wait or grow;
* every scoped :class:`Expectation` whose predicate matches (``Domain.wait_event``, and a
  detach waiting for its DEVICE_DELETED). An expectation made *before* the command whose
  event it waits for cannot miss it;
* the fallback handler, when no expectation *claimed* it: a DEVICE_DELETED nobody waits for
  any more (a detach that said "pending") still finishes its device's books.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Generator
from dataclasses import field
from typing import Any, ClassVar, Self

from qctl.errors import StateError
from qctl.qmp import QMPEvent
from qctl.record import record

__all__ = [
    "DeviceAdded",
    "DeviceRemoved",
    "DomainEvent",
    "EventHub",
    "EventStream",
    "Expectation",
    "NICRxFilterChanged",
    "OtherEvent",
    "Shutdown",
    "UnplugRejected",
    "from_qmp",
]


@record
class DomainEvent:
    """Something that happened to a domain; ``timestamp`` is QEMU's (None for qctl's own)."""

    timestamp: float | None

    #: the QEMU event this class stands for ('' for qctl's own)
    QEMU_NAME: ClassVar[str] = ""

    @property
    def qemu_name(self) -> str:
        """The QEMU event's name (``DEVICE_DELETED``, …), or '' for an event of qctl's."""
        return self.QEMU_NAME


@record
class DeviceAdded(DomainEvent):
    """qctl finished attaching the device ``alias``."""

    alias: str


@record
class DeviceRemoved(DomainEvent):
    """QEMU removed the device ``alias`` (DEVICE_DELETED)."""

    QEMU_NAME: ClassVar[str] = "DEVICE_DELETED"

    alias: str


@record
class UnplugRejected(DomainEvent):
    """The guest refused to release the device ``alias`` (DEVICE_UNPLUG_GUEST_ERROR)."""

    QEMU_NAME: ClassVar[str] = "DEVICE_UNPLUG_GUEST_ERROR"

    alias: str


@record
class NICRxFilterChanged(DomainEvent):
    """The guest changed the RX filter (MAC, multicast list) of NIC ``alias``."""

    QEMU_NAME: ClassVar[str] = "NIC_RX_FILTER_CHANGED"

    alias: str


@record
class Shutdown(DomainEvent):
    """QEMU is shutting down; ``guest`` says whether the guest asked for it."""

    QEMU_NAME: ClassVar[str] = "SHUTDOWN"

    guest: bool
    reason: str


@record
class OtherEvent(DomainEvent):
    """Any other QEMU event, by name, with its data."""

    name: str
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def qemu_name(self) -> str:
        """The QEMU event's name."""
        return self.name


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


#: what an :class:`Expectation` or a wait looks for
Match = Callable[[DomainEvent], bool]


class Expectation:
    """A scoped wait for the first event that ``match`` accepts (see :meth:`EventHub.expect`).

    Await it for the event. Leaving its ``with`` block withdraws it; a *claiming*
    expectation that caught an event it did not :meth:`take` hands it to the hub's
    fallback then, so a waiter that gave up (timeout, cancellation) never swallows it.
    """

    def __init__(self, hub: EventHub, match: Match, claim: bool) -> None:
        self._hub = hub
        self.match = match
        self.claim = claim
        self.future: asyncio.Future[DomainEvent] = asyncio.get_running_loop().create_future()
        self._taken = False

    def take(self) -> DomainEvent:
        """The event caught (it must be done), marked as handled by the waiter."""
        self._taken = True
        return self.future.result()

    def __await__(self) -> Generator[Any, None, DomainEvent]:
        return asyncio.shield(self.future).__await__()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._hub._withdraw(self)
        future = self.future
        caught = future.done() and not future.cancelled() and future.exception() is None
        if self.claim and not self._taken and caught:
            self._hub._unclaimed(future.result())


class EventHub:
    """Hands each typed event to the streams, the expectations and the fallback."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._streams: list[EventStream] = []
        self._expectations: list[Expectation] = []
        self._fallback: Callable[[DomainEvent], None] | None = None
        self._ended = False

    def set_fallback(self, handler: Callable[[DomainEvent], None]) -> None:
        """What to do with an event no expectation claimed."""
        self._fallback = handler

    def stream(self, maxsize: int = 256) -> EventStream:
        """A bounded stream of every event from now on (ended when the hub ends)."""
        stream = EventStream(maxsize, self._streams.remove)
        if self._ended:
            stream.end()
        else:
            self._streams.append(stream)
        return stream

    def expect(self, match: Match, *, claim: bool = False) -> Expectation:
        """Wait for the next event ``match`` accepts; use it as a ``with`` block.

        ``claim``: the event is the waiter's to handle, not the fallback's (see
        :class:`Expectation`). When the hub ends first, awaiting raises StateError.
        """
        expectation = Expectation(self, match, claim)
        if self._ended:
            expectation.future.set_exception(self._gone())
        else:
            self._expectations.append(expectation)
        return expectation

    def publish(self, event: DomainEvent) -> None:
        """Hand ``event`` out (see the class)."""
        for stream in list(self._streams):
            stream.deliver(event)
        claimed = False
        for expectation in list(self._expectations):
            if not expectation.future.done() and expectation.match(event):
                expectation.future.set_result(event)
                claimed = claimed or expectation.claim
        if not claimed:
            self._unclaimed(event)

    def end(self) -> None:
        """No more events (QEMU exited, or the handle closed): streams end after what they
        hold, waits raise StateError."""
        self._ended = True
        for stream in list(self._streams):
            stream.end()
        for expectation in self._expectations:
            if not expectation.future.done():
                expectation.future.set_exception(self._gone())
                expectation.future.exception()  # retrieved: nobody may be waiting

    @property
    def ended(self) -> bool:
        """True once :meth:`end` was called."""
        return self._ended

    def _gone(self) -> StateError:
        return StateError(f"domain {self._name!r}: no more events (QEMU exited or closed)")

    def _withdraw(self, expectation: Expectation) -> None:
        if expectation in self._expectations:
            self._expectations.remove(expectation)

    def _unclaimed(self, event: DomainEvent) -> None:
        if self._fallback is not None and not self._ended:
            self._fallback(event)
