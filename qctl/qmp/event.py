"""QMP events and bounded event subscriptions.

A :class:`QMPEvent` is one asynchronous message from QEMU (``DEVICE_DELETED``, ``STOP``, …).
An :class:`EventSubscription` collects the events a caller asked for, from the moment it is
created, in a queue of bounded size: when the queue is full the oldest event is dropped and
counted, so a reader that falls behind costs memory it chose (``maxsize``), never unbounded
growth, and QEMU's reader is never blocked. Subscriptions are cheap; create one per wait
(*before* sending the command whose event you expect, so the event cannot slip past).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Any, Self

from qctl.errors import QMPConnectionError
from qctl.record import record

__all__ = ["DEFAULT_EVENT_QUEUE", "EventSubscription", "QMPEvent"]

# How many undelivered events a subscription keeps unless told otherwise.
DEFAULT_EVENT_QUEUE = 256


@record
class QMPEvent:
    """One QMP event: its name, its ``data`` member (empty when absent) and QEMU's timestamp.

    ``timestamp`` is seconds since the epoch as QEMU stamped it, or ``None`` if it sent none.
    """

    name: str
    data: Mapping[str, Any]
    timestamp: float | None = None

    @classmethod
    def from_message(cls, message: Mapping[str, Any]) -> QMPEvent | None:
        """Build an event from a raw QMP message; ``None`` when it is not a well-formed event."""
        name = message.get("event")
        if not isinstance(name, str):
            return None
        data = message.get("data")
        stamp = message.get("timestamp")
        timestamp = None
        if isinstance(stamp, Mapping):
            seconds, micros = stamp.get("seconds"), stamp.get("microseconds")
            if isinstance(seconds, int) and isinstance(micros, int):
                timestamp = seconds + micros / 1_000_000
        fields = dict(data) if isinstance(data, Mapping) else {}
        return cls(name, MappingProxyType(fields), timestamp)


class EventSubscription:
    """A bounded queue of the events a caller subscribed to; an async iterator over them.

    Made by :meth:`QMPClient.events`. Iterating ends when the subscription is closed or the
    connection ends (after the queued events are delivered); :meth:`get` and :meth:`wait_for`
    raise :class:`~qctl.errors.QMPConnectionError` then instead. Use it as a context manager,
    or call :meth:`close`, to unsubscribe.

    ``dropped`` counts the events discarded because the queue was full.
    """

    def __init__(
        self,
        names: Iterable[str] | None,
        *,
        maxsize: int = DEFAULT_EVENT_QUEUE,
        on_close: Callable[[EventSubscription], None] | None = None,
    ) -> None:
        if maxsize < 1:
            raise ValueError(f"an event queue holds at least one event, not {maxsize}")
        self.names: frozenset[str] | None = None if names is None else frozenset(names)
        self.maxsize = maxsize
        self.dropped = 0
        self._queue: deque[QMPEvent] = deque()
        self._wakeup = asyncio.Event()
        self._ended: str | None = None  # why no more events will come, once that is so
        self._on_close = on_close

    def __repr__(self) -> str:
        names = "all" if self.names is None else ",".join(sorted(self.names))
        state = f"ended: {self._ended}" if self._ended else "open"
        return f"<EventSubscription {names} pending={len(self._queue)} {state}>"

    @property
    def pending(self) -> int:
        """How many events are queued and not yet read."""
        return len(self._queue)

    def deliver(self, event: QMPEvent) -> None:
        """Queue ``event`` if it is one of ours (called by the client for every event)."""
        if self._ended is not None or (self.names is not None and event.name not in self.names):
            return
        if len(self._queue) >= self.maxsize:
            self._queue.popleft()
            self.dropped += 1
        self._queue.append(event)
        self._wakeup.set()

    def end(self, reason: str) -> None:
        """No more events will come (the connection closed): wake every waiting reader."""
        if self._ended is None:
            self._ended = reason
            self._wakeup.set()

    def close(self) -> None:
        """Unsubscribe; idempotent. Queued events are discarded, waiting readers woken."""
        self._queue.clear()
        self.end("subscription closed")
        if self._on_close is not None:
            on_close, self._on_close = self._on_close, None
            on_close(self)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def get(self) -> QMPEvent:
        """The next queued event, waiting for one if needed.

        :raise QMPConnectionError: when the subscription ended and no event is left.
        """
        while not self._queue:
            if self._ended is not None:
                raise QMPConnectionError(f"no more events: {self._ended}")
            self._wakeup.clear()
            await self._wakeup.wait()
        return self._queue.popleft()

    async def wait_for(self, predicate: Callable[[QMPEvent], bool] | None = None) -> QMPEvent:
        """The first event for which ``predicate`` is true (any event without one).

        Events read on the way that do not match are discarded. Other tasks keep using the
        client meanwhile: this waits on this subscription only. Bound the wait with
        ``asyncio.timeout()`` at the call site.

        :raise QMPConnectionError: when the subscription ended first.
        """
        while True:
            event = await self.get()
            if predicate is None or predicate(event):
                return event

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> QMPEvent:
        try:
            return await self.get()
        except QMPConnectionError:
            raise StopAsyncIteration from None
