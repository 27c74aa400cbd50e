"""What :meth:`Domain.start`, :meth:`Domain.connect` and :meth:`Domain.incoming` return.

``dom = await Domain.start(...)`` gives a handle that only disconnects when closed (QEMU
outlives it); ``async with Domain.start(...) as dom`` also stops the domain when the block is
left, normally or by an exception, so a test that fails leaves no QEMU, tap or state.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from typing import Any, Generic, Protocol, TypeVar

from qctl.qemu.txn import to_the_end

__all__ = ["SCOPED_STOP_GRACE", "Opening"]

#: how long leaving ``async with Domain.start(...)`` gives the guest to power down
SCOPED_STOP_GRACE = 5.0


class Handle(Protocol):
    """What an opening hands out: a handle that can stop its domain and close."""

    async def stop(self, *, grace: float) -> None: ...
    async def aclose(self) -> None: ...


H = TypeVar("H", bound=Handle)


class Opening(Generic[H]):
    """What :meth:`Domain.start` and :meth:`Domain.connect` return: await it or ``async with``.

    ``async with`` closes the handle on leaving the block; for a start (``stop_on_exit``)
    it first stops the domain — gracefully with a short grace, then by force — whether the
    block ended normally or by an exception.
    """

    def __init__(self, opener: Callable[[], Awaitable[H]], *, stop_on_exit: bool) -> None:
        self._opener = opener
        self._stop_on_exit = stop_on_exit
        self._domain: H | None = None

    def __await__(self) -> Generator[Any, None, H]:
        return self._opener().__await__()

    async def __aenter__(self) -> H:
        self._domain = await self._opener()
        return self._domain

    async def __aexit__(self, *exc_info: object) -> None:
        if self._domain is None:
            return
        try:
            if self._stop_on_exit:
                await to_the_end(self._domain.stop(grace=SCOPED_STOP_GRACE))
        finally:
            await self._domain.aclose()
