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
    sent: asyncio.Future[None] | None = None,
) -> QMPClient:
    """A client connected to the first of the UNIX sockets ``addresses`` to greet.

    Every address is tried at once; among monitors that greet together the earliest address
    wins. ``timeout`` bounds the whole: waiting for a greeting and the handshake. ``ask`` and
    ``sent``: see :meth:`QMPClient.connect`.

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
    return await connect_qmp(sock, timeout=left, name=name, ask=ask, sent=sent)


async def _first_to_speak(
    paths: list[str], deadline: float | None, budget: float | None
) -> socket.socket:
    """A socket connected to the first monitor with its greeting waiting to be read."""
    loop = asyncio.get_running_loop()
    attempts: list[_Attempt] = []
    winner: _Attempt | None = None
    try:
        for path in paths:  # one by one: those made are closed if the next cannot be
            attempts.append(_Attempt(loop, path))
        pending = {attempt.outcome for attempt in attempts}
        while pending and winner is None:
            left = None if deadline is None else max(deadline - loop.time(), 0.0)
            done, pending = await asyncio.wait(
                pending, timeout=left, return_when=asyncio.FIRST_COMPLETED
            )
            if not done:
                break
            winner = next((a for a in attempts if a.spoke), None)
        if winner is not None:
            return winner.sock
        failures = [a.outcome.exception() for a in attempts if a.outcome.done()]
        if failures and failures[0] is not None:
            raise failures[0]
        where = f"QMP socket{'s' if len(paths) > 1 else ''} {', '.join(paths)}"
        raise QMPTimeoutError(f"{where}: no QMP greeting within {budget:g}s")
    finally:
        for attempt in attempts:
            if attempt is not winner:
                attempt.close()


class _Attempt:
    """One monitor tried: connected at once (a UNIX socket connects or fails without
    waiting), then watched until it has something to read, which it leaves unread.

    ``outcome`` is done with None once the monitor has spoken, or with the
    :class:`QMPConnectionError` that ended the attempt (no such socket, refused, its queue
    full, closed without a word).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, path: str) -> None:
        self._loop = loop
        self._path = path
        self._watched = False
        self.outcome: asyncio.Future[None] = loop.create_future()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
        try:
            try:
                self.sock.connect(path)
            except OSError as exc:  # EAGAIN: the monitor's queue is full: as good as busy
                self._fail(exc.strerror or str(exc), exc)
                return
            loop.add_reader(self.sock.fileno(), self._readable)
        except BaseException:
            self.sock.close()
            raise
        self._watched = True

    @property
    def spoke(self) -> bool:
        """Whether the monitor has sent something (its greeting)."""
        return self.outcome.done() and self.outcome.exception() is None

    def close(self) -> None:
        """Stop watching and close the socket (an attempt that lost, or was cut short)."""
        self._unwatch()
        self.sock.close()
        if not self.outcome.done():
            self.outcome.cancel()
        elif not self.outcome.cancelled():
            self.outcome.exception()  # a loser's failure is not news: marked as seen

    def _readable(self) -> None:
        self._unwatch()
        try:
            first = self.sock.recv(1, socket.MSG_PEEK)
        except OSError as exc:
            self._fail(exc.strerror or str(exc), exc)
            return
        if first:
            self.outcome.set_result(None)
        else:
            self._fail("closed before the QMP handshake completed")

    def _fail(self, why: str, cause: OSError | None = None) -> None:
        error = QMPConnectionError(f"QMP socket {self._path}: {why}")
        error.__cause__ = cause
        self.outcome.set_exception(error)

    def _unwatch(self) -> None:
        if self._watched:
            self._watched = False
            self._loop.remove_reader(self.sock.fileno())
