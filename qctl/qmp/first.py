"""Connecting to whichever of several monitors of one QEMU greets first.

QEMU serves each monitor to one client at a time. A monitor busy with another client still
accepts a connection (the kernel's listen backlog does), but sends its greeting only once
that client has left. Trying the monitors one after the other with a short greeting timeout
therefore waits that timeout on every busy one, and a QEMU too slow to greet within it looks
busy. :func:`connect_first` connects a plain socket to every monitor at once, waits until one
of them has something to read (the greeting, which it leaves unread), closes the others, and
only then runs the QMP handshake on that socket: busy monitors cost nothing, a merely slow
QEMU has the whole timeout on each, and no qemu.qmp session is started just to be cancelled
(which costs qemu.qmp a formatted traceback each).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Sequence

from qctl.errors import QMPConnectionError, QMPTimeoutError
from qctl.qmp.client import CONNECT_TIMEOUT, QMPClient, connect_qmp

__all__ = ["connect_first"]


async def connect_first(
    addresses: Sequence[str | os.PathLike[str]],
    *,
    timeout: float | None = CONNECT_TIMEOUT,  # noqa: ASYNC109 - bounds the handshakes, typed error
    name: str = "qmp",
    ask: str | None = None,
) -> QMPClient:
    """A client connected to the first of the UNIX sockets ``addresses`` to greet.

    Every address is tried at once; among monitors that greet together the earliest address
    wins. ``timeout`` bounds the whole: waiting for a greeting and the handshake. ``ask``:
    see :meth:`QMPClient.connect`.

    :raise QMPTimeoutError: no monitor greeted within ``timeout`` (all busy, or QEMU hung).
    :raise QMPError: every attempt failed, or none greeted in time and some failed: the
        error of the first address that failed. A failing handshake on the monitor that
        greeted is raised as it is.
    :raise ValueError: ``addresses`` is empty.
    """
    if not addresses:
        raise ValueError("connect_first: no monitor address given")
    paths = [os.fspath(address) for address in addresses]
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    sock = await _first_to_speak(paths, deadline, timeout)
    left = None if deadline is None else max(deadline - loop.time(), 0.0)
    return await connect_qmp(sock, timeout=left, name=name, ask=ask)


async def _first_to_speak(
    paths: list[str], deadline: float | None, budget: float | None
) -> socket.socket:
    """A socket connected to the first monitor with its greeting waiting to be read."""
    loop = asyncio.get_running_loop()
    attempts = [asyncio.create_task(_speaks(path), name=f"greeting on {path}") for path in paths]
    winner: socket.socket | None = None
    try:
        pending: set[asyncio.Task[socket.socket]] = set(attempts)
        while pending and winner is None:
            left = None if deadline is None else max(deadline - loop.time(), 0.0)
            done, pending = await asyncio.wait(
                pending, timeout=left, return_when=asyncio.FIRST_COMPLETED
            )
            if not done:
                break
            winner = next((a.result() for a in attempts if _succeeded(a)), None)
        if winner is not None:
            return winner
        failures = [a.exception() for a in attempts if a.done() and not a.cancelled()]
        if failures and failures[0] is not None:
            raise failures[0]
        where = f"QMP socket{'s' if len(paths) > 1 else ''} {', '.join(paths)}"
        raise QMPTimeoutError(f"{where}: no QMP greeting within {budget:g}s")
    finally:
        for attempt in attempts:
            attempt.cancel()
        await asyncio.wait(attempts)
        for attempt in attempts:
            if _succeeded(attempt) and attempt.result() is not winner:
                attempt.result().close()


def _succeeded(attempt: asyncio.Task[socket.socket]) -> bool:
    return attempt.done() and not attempt.cancelled() and attempt.exception() is None


async def _speaks(path: str) -> socket.socket:
    """Connect to ``path`` and wait until the monitor sends something (left unread).

    :raise QMPConnectionError: no such socket, refused, or closed without a word.
    """
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
    try:
        try:
            await loop.sock_connect(sock, path)
            await _readable(loop, sock)
            first = sock.recv(1, socket.MSG_PEEK)
        except OSError as exc:
            raise QMPConnectionError(f"QMP socket {path}: {exc.strerror or exc}") from exc
        if not first:
            raise QMPConnectionError(
                f"QMP socket {path}: closed before the QMP handshake completed"
            )
    except BaseException:
        sock.close()
        raise
    return sock


async def _readable(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
    """Wait until ``sock`` has data (or an end of file, or an error) to read."""
    ready = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(sock.fileno(), wake)
    try:
        await ready
    finally:
        with contextlib.suppress(ValueError, OSError):
            loop.remove_reader(sock.fileno())
