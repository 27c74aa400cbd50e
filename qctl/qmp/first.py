"""Connecting to whichever of several monitors of one QEMU greets first.

QEMU serves each monitor to one client at a time. A monitor busy with another client still
accepts a connection (the kernel's listen backlog does), but sends its greeting only once
that client has left. Trying the monitors one after the other with a short greeting timeout
therefore waits that timeout on every busy one, and a QEMU too slow to greet within it looks
busy. :func:`connect_first` tries them all at once and keeps the first that completes the
handshake: busy monitors cost nothing, and a merely slow QEMU has the whole timeout on each.

The attempts that lose are cancelled (qemu.qmp then closes their sockets, and a busy QEMU
later finds the connection gone), and an attempt that completed in the same instant as the
winner is closed, so nothing is left connected but the client returned.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence

from qctl.errors import QMPError, QMPTimeoutError
from qctl.qmp.client import CONNECT_TIMEOUT, QMPClient, connect_qmp

__all__ = ["connect_first"]


async def connect_first(
    addresses: Sequence[str | os.PathLike[str]],
    *,
    timeout: float | None = CONNECT_TIMEOUT,  # noqa: ASYNC109 - bounds the handshakes, typed error
    name: str = "qmp",
) -> QMPClient:
    """A client connected to the first of ``addresses`` to complete the QMP handshake.

    Every address is tried at once, each within ``timeout``; among attempts that finish
    together the earliest address wins.

    :raise QMPTimeoutError: no monitor greeted within ``timeout`` (all busy, or QEMU hung).
    :raise QMPError: every attempt failed; the error of the first address that failed
        other than by timing out.
    :raise ValueError: ``addresses`` is empty.
    """
    if not addresses:
        raise ValueError("connect_first: no monitor address given")
    attempts = [
        asyncio.create_task(_connect(address, timeout, name), name=f"{name}: connect {address}")
        for address in addresses
    ]
    winner: QMPClient | None = None
    try:
        pending: set[asyncio.Task[QMPClient]] = set(attempts)
        while pending and winner is None:
            _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for attempt in attempts:
                if attempt.done() and not attempt.cancelled() and attempt.exception() is None:
                    winner = attempt.result()
                    break
        if winner is not None:
            return winner
        raise _failure(attempts)
    finally:
        cleanup = asyncio.ensure_future(_close_losers(attempts, winner))
        await asyncio.shield(cleanup)


async def _connect(address: str | os.PathLike[str], limit: float | None, name: str) -> QMPClient:
    return await connect_qmp(address, timeout=limit, name=name)


def _failure(attempts: list[asyncio.Task[QMPClient]]) -> BaseException:
    """What to raise when every attempt failed (see :func:`connect_first`)."""
    errors = [attempt.exception() for attempt in attempts]
    for error in errors:
        if error is not None and not isinstance(error, QMPError):
            return error  # not a connection failure: a bug, passed on as it is
    for error in errors:
        if not isinstance(error, QMPTimeoutError) and error is not None:
            return error
    first = errors[0]
    assert first is not None
    return first


async def _close_losers(attempts: list[asyncio.Task[QMPClient]], winner: QMPClient | None) -> None:
    """Cancel the attempts still running and close every client but ``winner``."""
    for attempt in attempts:
        attempt.cancel()
    await asyncio.wait(attempts)
    for attempt in attempts:
        if attempt.cancelled() or attempt.exception() is not None:
            continue
        client = attempt.result()
        if client is not winner:
            await client.aclose()
