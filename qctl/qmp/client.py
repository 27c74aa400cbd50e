"""The one wrapper around qemu.qmp: connect, execute, events, fd passing and quit.

:class:`QMPClient` talks to one QEMU monitor. Everything qemu.qmp raises is translated here,
at the boundary, into qctl's tree (the original kept as ``__cause__``):

- a command QEMU refused → :class:`QMPCommandError` with QEMU's error class and text;
- no socket, refused, reset, EOF → :class:`QMPConnectionError`;
- a peer that does not speak QMP (bad greeting, failed negotiation, garbage) →
  :class:`QMPProtocolError`;
- no answer in time → :class:`QMPTimeoutError`.

``asyncio.CancelledError`` passes through untouched. After ``quit``, QEMU closes the socket
and qemu.qmp reports that EOF as an error; :meth:`QMPClient.quit` treats it as the success it
is.

Three things qemu.qmp does are changed by subclassing it (``_Wire``): its default event
listener queues every event forever, so events go instead to bounded
:class:`~qctl.qmp.event.EventSubscription` objects; its message hooks pretty-print every
message (200 KB for ``query-qmp-schema``) even when nobody logs, so they format only when
debug logging is on; and its log lines go to ``qctl.qmp.wire`` at DEBUG level only, since
every failure it logs reaches the caller as a typed exception anyway. A fourth is added: a
command may travel with the capabilities negotiation (``connect(ask=…)``), so that a
connect that needs one answer at once (the run state, on reconnecting) pays one round trip.
A fifth is made faster: a command goes out in the caller's own step, unless others are still
queued before it, and its reply comes back through a future rather than a one-slot queue, with
no copy of the message. qemu.qmp's path costs 145 µs of CPU per command with 32 monitors busy
at once, this one 95 µs (``scripts/bench scale`` pays it on every step it times).
A sixth is made safe: when a monitor's client leaves with a command under way, QEMU sends
that command's reply to the monitor's next client, right after the greeting (or, rarely,
just before it: qemu.qmp then refuses the greeting, and here it is dropped). qemu.qmp takes
the first reply for the negotiation's and numbers every session's commands from
``__qmp#00000``; here the negotiation's reply is known by its id (with an ask, the ask's
reply settles both), and command ids are unique to the session, so such a reply is dropped.
(When the reply owed was to the previous client's own qmp_capabilities, QEMU is in command
mode already and refuses this client's as done: that counts as done.) Out-of-band
execution, which qctl never uses, is not enabled: negotiating is faster without it.
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import logging
import os
import socket
import string
from collections.abc import Callable, Generator, Iterable, Mapping
from types import MappingProxyType
from typing import Any, Self, cast

from qemu.qmp import ConnectError, ExecInterruptedError, ExecuteError, Message, Runstate, StateError
from qemu.qmp import QMPClient as _QEMUClient
from qemu.qmp import QMPError as _QEMUError
from qemu.qmp.error import ProtocolError
from qemu.qmp.models import ErrorResponse, Greeting
from qemu.qmp.qmp_client import BadReplyError, GreetingError, NegotiationError

from qctl.errors import (
    QMPCommandError,
    QMPConnectionError,
    QMPError,
    QMPProtocolError,
    QMPTimeoutError,
)
from qctl.qmp.event import DEFAULT_EVENT_QUEUE, EventSubscription, QMPEvent
from qctl.qmp.record import Recorder
from qctl.record import record

__all__ = [
    "CONNECT_TIMEOUT",
    "DEFAULT_TIMEOUT",
    "AddedFd",
    "QMPClient",
    "connect_qmp",
]

# Seconds a command may take unless the caller says otherwise.
DEFAULT_TIMEOUT = 30.0
# Seconds from connecting to the end of capabilities negotiation.
CONNECT_TIMEOUT = 10.0
# How much of a message the wire log shows.
_LOGGED_BYTES = 2000
# The most replies QEMU can owe a monitor's previous client (QMP_REQ_QUEUE_LEN_MAX).
_MAX_OWED = 8

_log = logging.getLogger(__name__)
_sessions = itertools.count()
#: the digits of command ids (see _Wire._get_exec_id)
_DIGITS = string.digits + string.ascii_letters
_wire_log = logging.getLogger("qctl.qmp.wire")


@record
class AddedFd:
    """Where ``add-fd`` put a passed fd: its fd set and the fd number inside QEMU."""

    fdset_id: int
    fd: int


class _DebugOnly(logging.LoggerAdapter[logging.Logger]):
    """A logger that files every message at DEBUG, whatever level it was logged at."""

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        super().log(logging.DEBUG, msg, *args, **kwargs)


class _Wire(_QEMUClient):
    """qemu.qmp's client with events, message hooks and logging redirected (see the module)."""

    def __init__(self, name: str, deliver: Callable[[QMPEvent], None]) -> None:
        super().__init__(name)
        # qemu.qmp only calls debug/info/warning/error/critical/log on it.
        self.logger = cast(logging.Logger, _DebugOnly(_wire_log.getChild(name), {}))
        self._deliver = deliver
        self.ask: str | None = None  # a command sent along with qmp_capabilities
        self._session = f"{_compact(os.getpid())}.{_compact(next(_sessions))}"  # its ids' stem
        # The handshake's ids are random instead: the stem repeats across processes that
        # share a pid (pid namespaces: a container's qctl is often pid 1, session 0), and
        # only the handshake's replies can meet ones owed to an earlier client (those come
        # before the first reply of this one). No ".": never one of the commands' ids.
        nonce = _compact(int.from_bytes(os.urandom(4)))
        self.handshake_ids = (f"n{nonce}", f"a{nonce}")
        self.sent: asyncio.Future[None] | None = None  # set once both are on their way
        self.answer: Message | None = None  # its reply, until an event may have changed it

    async def execute(
        self, cmd: str, arguments: Mapping[str, object] | None = None, oob: bool = False
    ) -> object:
        """qemu.qmp's ``execute``, by a shorter road (see the module); the same errors."""
        if oob or self.runstate is not Runstate.RUNNING:
            return await super().execute(cmd, arguments, oob=oob)  # its checks and errors
        exec_id = self._get_exec_id()
        body: dict[str, object] = {"execute": cmd, "id": exec_id}
        if arguments is not None:
            body["arguments"] = arguments
        sent = Message(body, eager=False)
        reply = _Reply()
        pending = cast(dict[str | None, Any], self._pending)
        pending[exec_id] = reply  # where qemu.qmp routes the reply, or the disconnection
        try:
            if self._outgoing.empty():  # nothing queued ahead of it: it may go now, in order
                self._do_send(self._cb_outbound(sent))
            else:
                await self._outgoing.put(sent)
            received = await reply.future
        finally:
            del pending[exec_id]
        if isinstance(received, ExecInterruptedError):
            raise received
        return _returned(sent, received)

    def _get_exec_id(self) -> str:
        # Unique to this session (process and connection), not "__qmp#00000" on: a reply
        # QEMU still owes an earlier client of the monitor (see _negotiate) can never pass
        # for one of ours. Short: QEMU reads a command a byte at a time, one turn of its
        # main loop each (QEMU 7.2 and 10.0: 4-7 µs of its CPU per byte), so "5bI.1.ZZ"
        # rather than "qctl-19946-1-3843" saves it ~60 µs a command (query-status: 390 ->
        # 317 µs of QEMU CPU; qemu.qmp's "__qmp#03843": 295).
        exec_id = f"{self._session}.{_compact(self._execute_id)}"
        self._execute_id += 1
        return exec_id

    async def _get_greeting(self) -> Greeting:
        """QEMU's greeting. Replies QEMU still owed the monitor's previous client can come
        before it, not only after (a command of that client's ended as this one was being
        accepted: 2 in 400 quick reconnects after a ``query-qmp-schema``): they are dropped,
        as many as QEMU queues for one client at most."""
        try:
            message = await self._recv()
            for _ in range(_MAX_OWED):
                if "QMP" in message or not ("return" in message or "error" in message):
                    break
                _wire_log.debug("a reply owed to an earlier client dropped: %.200r", message)
                message = await self._recv()
            return Greeting(message)
        except (ProtocolError, KeyError, TypeError) as exc:  # as qemu.qmp says it
            raise GreetingError("Did not understand Greeting", exc) from exc

    async def _negotiate(self) -> None:
        # When a client leaves with a command under way, QEMU sends that command's reply to
        # the monitor's next client, right after its greeting (QEMU 7.2: 34 times in 40
        # reconnecting at once), where it would pass for this negotiation's reply. So a
        # reply counts only by its id (command ids are unique to the session). With an ask,
        # only the ask carries one: it goes in the same write, QEMU answers in order, and
        # the ask's reply settles both (a QEMU still negotiating refuses it with
        # CommandNotFound); events on the way came before the answer, later ones (see
        # _event_dispatch) make it stale. Out-of-band execution is not enabled (qemu.qmp
        # enables it when QEMU offers it): qctl sends no out-of-band command, and QEMU
        # answers the two in 0.59 ms without it, 0.79 with it (0.48 and 0.70 with no ids).
        negotiate = self.make_execute_msg("qmp_capabilities")
        try:
            if self.ask is None:
                negotiate["id"] = self.handshake_ids[0]
                await self._send(negotiate)
                reply = await self._reply_to(negotiate["id"])
                if "return" not in reply and not _negotiated_before(reply):
                    raise ProtocolError(f"qmp_capabilities refused: {reply}")
                return
            ask = self.make_execute_msg(self.ask)
            ask["id"] = self.handshake_ids[1]
            await self._send(negotiate)
            await self._send(ask)
            if self.sent is not None and not self.sent.done():
                self.sent.set_result(None)
            answer = await self._reply_to(ask["id"])
            if _still_negotiating(answer):
                raise ProtocolError(f"qmp_capabilities refused: {answer}")
            self.answer = answer
        except ProtocolError as exc:
            raise NegotiationError("Negotiation failed", exc) from exc

    async def _reply_to(self, exec_id: object) -> Message:
        """The reply with id ``exec_id``; events on the way (QEMU may send one as soon as it
        is in command mode) go to the subscribers, replies to an earlier client are
        dropped."""
        message = await self._recv()
        while "event" in message or message.get("id") != exec_id:
            if "event" in message:
                await self._dispatch(message)
            else:
                _wire_log.debug("a reply owed to an earlier client dropped: %.200r", message)
            message = await self._recv()
        return message

    async def _event_dispatch(self, msg: Message) -> None:
        self.answer = None
        await self._dispatch(msg)

    async def _dispatch(self, msg: Message) -> None:
        event = QMPEvent.from_message(msg)
        if event is None:
            _wire_log.debug("malformed event dropped: %r", msg)
        else:
            self._deliver(event)

    def _cb_outbound(self, msg: Message) -> Message:
        if _wire_log.isEnabledFor(logging.DEBUG):
            _wire_log.debug("--> %.*s", _LOGGED_BYTES, bytes(msg).decode(errors="replace"))
        return msg

    def _cb_inbound(self, msg: Message) -> Message:
        if _wire_log.isEnabledFor(logging.DEBUG):
            _wire_log.debug("<-- %.*s", _LOGGED_BYTES, bytes(msg).decode(errors="replace"))
        return msg


class _Reply:
    """Where one command's reply arrives: qemu.qmp keeps a one-slot ``asyncio.Queue`` per
    pending command, and calls only ``put`` (a reply) and ``put_nowait`` (the connection
    ended) on it; a future does the same for less."""

    __slots__ = ("future",)

    def __init__(self) -> None:
        self.future: asyncio.Future[Message | ExecInterruptedError] = (
            asyncio.get_running_loop().create_future()
        )

    async def put(self, message: Message) -> None:
        self.put_nowait(message)

    def put_nowait(self, message: Message | ExecInterruptedError) -> None:
        if not self.future.done():
            self.future.set_result(message)


def _compact(number: int) -> str:
    """``number`` (>= 0) in base 62: the shortest id part."""
    digits = _DIGITS[number % 62]
    while number >= 62:
        number //= 62
        digits = _DIGITS[number % 62] + digits
    return digits


def _not_found(reply: Message) -> str | None:
    """The text of a CommandNotFound refusal, or None when ``reply`` is not one: how QEMU
    refuses qmp_capabilities in command mode, and any other command before it."""
    error = reply.get("error")
    if isinstance(error, Mapping) and error.get("class") == "CommandNotFound":
        return str(error.get("desc", ""))
    return None


def _negotiated_before(reply: Message) -> bool:
    """Whether QEMU refused qmp_capabilities as already done: the previous client's, still
    under way when it left, ran after this client's greeting (and put the monitor in command
    mode for this session too)."""
    return _not_found(reply) is not None


def _still_negotiating(reply: Message) -> bool:
    """Whether QEMU refused a command for want of capabilities negotiation."""
    refusal = _not_found(reply)
    return refusal is not None and "qmp_capabilities" in refusal


def _returned(sent: Message, received: Message) -> object:
    """A reply's ``return`` value, or qemu.qmp's error for it (as its ``execute_msg``)."""
    if "error" in received:
        try:
            response = ErrorResponse(received)
        except (KeyError, TypeError) as exc:
            raise BadReplyError("QMP error reply is malformed", received, sent) from exc
        raise ExecuteError(response, sent, received)
    if "return" not in received:
        raise BadReplyError("QMP reply is missing a 'error' or 'return' member", received, sent)
    return received["return"]


class _State(enum.Enum):
    NEW = "not connected"
    CONNECTING = "connecting"
    OPEN = "connected"
    CLOSED = "closed"


class QMPClient:
    """A connection to one QEMU monitor (QMP).

    Connect with :func:`connect_qmp` (``await`` it, or ``async with`` it), or build one and
    call :meth:`connect`. Any number of tasks may :meth:`execute` at once; replies are routed
    by id. Events go to subscriptions made with :meth:`events`, which may be made before
    connecting. ``recorder`` receives the conversation (see :mod:`qctl.qmp.record`).

    A client connects once; :meth:`aclose` (or leaving ``async with``) closes it and is
    idempotent.
    """

    def __init__(self, *, name: str = "qmp", recorder: Recorder | None = None) -> None:
        self.name = name
        self._recorder = recorder
        self._wire = _Wire(name, self._deliver)
        self._state = _State.NEW
        self._where = "QMP"
        self._greeting: Mapping[str, Any] = MappingProxyType({})
        self._subscriptions: list[EventSubscription] = []
        self._fd_lock = asyncio.Lock()  # one fd in flight at a time: QEMU keeps only the latest
        self._closing: asyncio.Task[BaseException | None] | None = None
        self._watcher: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"<QMPClient {self.name} {self._where} {self._state.value}>"

    @property
    def connected(self) -> bool:
        """True from a successful :meth:`connect` until the connection ends."""
        return self._state is _State.OPEN

    @property
    def greeting(self) -> Mapping[str, Any]:
        """QEMU's greeting (``{"QMP": {"version": …, "capabilities": […]}}``); empty before."""
        return self._greeting

    async def connect(
        self,
        address: str | os.PathLike[str] | socket.socket,
        *,
        timeout: float | None = CONNECT_TIMEOUT,  # noqa: ASYNC109 - bounds the handshake, typed error
        ask: str | None = None,
        sent: asyncio.Future[None] | None = None,
    ) -> None:
        """Connect, read the greeting and negotiate capabilities, all within ``timeout``.

        ``address`` is a UNIX socket path, or an already-connected socket, which the client
        then owns (and closes, also when connecting fails). ``ask`` names a command without
        arguments sent together with the negotiation, so that both cost one round trip; its
        reply is :meth:`take_answer`'s. ``sent`` (with ``ask``) is set once both are on their
        way: a caller may do its own work while QEMU answers.
        """
        if self._state is not _State.NEW:
            raise QMPConnectionError(
                f"{self.name}: a client connects once; this one is {self._state.value}"
            )
        self._wire.ask, self._wire.sent = ask, sent
        self._state = _State.CONNECTING
        target = address if isinstance(address, socket.socket) else os.fspath(address)
        self._where = f"QMP socket {target if isinstance(target, str) else target.fileno()}"
        try:
            async with asyncio.timeout(timeout):
                await self._wire.connect(target)
        except BaseException as exc:
            self._state = _State.CLOSED
            self._end_subscriptions("connection failed")
            if isinstance(target, socket.socket):
                target.close()
            if isinstance(exc, TimeoutError):
                raise QMPTimeoutError(
                    f"{self._where}: no QMP greeting within {timeout:g}s"
                ) from exc
            if isinstance(exc, ConnectError):
                raise _connect_error(self._where, exc) from exc
            raise
        self._state = _State.OPEN
        greeting = self._wire.greeting
        if greeting is not None:
            qmp = greeting.QMP
            self._greeting = MappingProxyType(
                {"QMP": {"version": dict(qmp.version), "capabilities": list(qmp.capabilities)}}
            )
        if self._recorder is not None:
            self._recorder.greeting(self._greeting)
        self._watcher = asyncio.create_task(self._watch(), name=f"{self.name}: connection watch")

    def take_answer(self, command: str) -> Any:
        """The ``return`` value of ``command`` asked while connecting (``connect(ask=…)``),
        once, and only while it is current; else None (then ask QEMU).

        QEMU reports a change of its state with an event, so an answer about its state holds
        until the next event: one arriving after the answer makes it stale, as does any
        command sent since (it may change the state) and the connection ending. A refusal is
        not kept either: asking again gives it as a :class:`QMPCommandError`.
        """
        if self._wire.ask != command:
            return None
        reply, self._wire.answer = self._wire.answer, None
        if self._state is not _State.OPEN or self._wire.runstate is not Runstate.RUNNING:
            return None
        if reply is None or "return" not in reply:
            return None
        self._record(command, None, {"reply": reply["return"]})
        return reply["return"]

    async def execute(
        self,
        command: str,
        arguments: Mapping[str, object] | None = None,
        *,
        timeout: float | None = DEFAULT_TIMEOUT,  # noqa: ASYNC109 - the per-command timeout
    ) -> Any:
        """Run a QMP command and return QEMU's ``return`` value.

        :raise QMPCommandError: QEMU refused it (its error class and text are kept).
        :raise QMPTimeoutError: no reply within ``timeout`` seconds (``None``: wait forever).
            Whether the command took effect is then unknown.
        :raise QMPConnectionError: the connection is closed, or ended before the reply.
        """
        self._check_open(command)
        self._wire.answer = None  # the command may change what it said
        try:
            async with asyncio.timeout(timeout):
                reply = await self._wire.execute(command, arguments)
        except TimeoutError as exc:
            raise QMPTimeoutError(f"{command}: no reply from QEMU within {timeout:g}s") from exc
        except ExecuteError as exc:
            error = {"class": exc.error_class, "desc": str(exc)}
            self._record(command, arguments, {"error": error})
            raise QMPCommandError(command, exc.error_class, str(exc)) from exc
        except (ExecInterruptedError, StateError) as exc:
            raise await self._lost(command) from exc
        except ProtocolError as exc:
            raise QMPProtocolError(f"{command}: malformed reply: {exc}") from exc
        self._record(command, arguments, {"reply": reply})
        return reply

    def events(
        self, names: str | Iterable[str] | None = None, *, maxsize: int = DEFAULT_EVENT_QUEUE
    ) -> EventSubscription:
        """Subscribe to events called ``names`` (all events when ``None``), from now on.

        The subscription keeps at most ``maxsize`` unread events, dropping the oldest (and
        counting them in ``dropped``) when full. Close it, or use it as a context manager.
        """
        wanted = (names,) if isinstance(names, str) else names
        subscription = EventSubscription(wanted, maxsize=maxsize, on_close=self._unsubscribe)
        if self._state is _State.CLOSED:
            subscription.end("connection closed")
        else:
            self._subscriptions.append(subscription)
        return subscription

    async def send_fd(self, name: str, fd: int) -> None:
        """Give QEMU a copy of ``fd`` under ``name`` (``getfd``) for commands that take fd names.

        The caller still owns ``fd`` and may close it once this returns.
        """
        async with self._fd_lock:
            self._pass_fd("getfd", fd)
            await self.execute("getfd", {"fdname": name})

    async def close_fd(self, name: str) -> None:
        """Make QEMU close the fd it received as ``name`` (``closefd``)."""
        await self.execute("closefd", {"fdname": name})

    async def add_fd(
        self,
        fd: int,
        *,
        fdset_id: int | None = None,
        opaque: str | None = None,
    ) -> AddedFd:
        """Give QEMU a copy of ``fd`` in an fd set (``add-fd``), usable as ``/dev/fdset/N``.

        Without ``fdset_id`` QEMU makes a new set. The caller still owns ``fd``.
        """
        arguments: dict[str, object] = {}
        if fdset_id is not None:
            arguments["fdset-id"] = fdset_id
        if opaque is not None:
            arguments["opaque"] = opaque
        async with self._fd_lock:
            self._pass_fd("add-fd", fd)
            reply = await self.execute("add-fd", arguments)
        try:
            return AddedFd(int(reply["fdset-id"]), int(reply["fd"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise QMPProtocolError(f"add-fd: unexpected reply {reply!r}") from exc

    async def remove_fd(self, fdset_id: int, fd: int | None = None) -> None:
        """Remove one fd (QEMU's number) from an fd set, or the whole set (``remove-fd``)."""
        arguments: dict[str, object] = {"fdset-id": fdset_id}
        if fd is not None:
            arguments["fd"] = fd
        await self.execute("remove-fd", arguments)

    async def quit(self) -> None:
        """Ask QEMU to exit (``quit``) and close the connection.

        The end of file QEMU sends as it exits is the expected outcome, not an error; so is
        the connection ending before the reply could be read.
        """
        self._check_open("quit")
        try:
            await self.execute("quit")
        except QMPConnectionError as exc:
            _log.debug("%s: quit: %s (QEMU is going away, as asked)", self.name, exc)
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection and end every subscription; idempotent, never raises.

        However the connection ended (EOF after ``quit``, reset), it is over: errors seen
        while closing are logged at debug level, not raised.
        """
        if self._state is _State.NEW:
            self._state = _State.CLOSED
            self._end_subscriptions("client closed")
            return
        if self._closing is None and self._state is _State.CLOSED:
            return  # connecting failed; nothing is open
        await self._disconnect()
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.wait((self._watcher,))

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- internals ------------------------------------------------------------------------

    def _check_open(self, command: str) -> None:
        if self._state is not _State.OPEN:
            raise QMPConnectionError(f"{command}: {self._where} is {self._state.value}")

    def _record(
        self, command: str, arguments: Mapping[str, object] | None, outcome: Mapping[str, Any]
    ) -> None:
        if self._recorder is not None:
            self._recorder.exchange(command, dict(arguments or {}), outcome)

    def _pass_fd(self, command: str, fd: int) -> None:
        """Send ``fd`` over the socket; the next fd-taking command claims it."""
        self._check_open(command)
        try:
            self._wire.send_fd_scm(fd)
        except StateError as exc:
            raise QMPConnectionError(f"{command}: {self._where} is closed") from exc
        except OSError as exc:
            raise QMPError(f"{command}: cannot pass fd {fd}: {exc.strerror or exc}") from exc
        except _QEMUError as exc:  # not a UNIX socket
            raise QMPError(f"{command}: cannot pass fd {fd}: {exc}") from exc

    def _deliver(self, event: QMPEvent) -> None:
        for subscription in tuple(self._subscriptions):
            subscription.deliver(event)

    def _unsubscribe(self, subscription: EventSubscription) -> None:
        if subscription in self._subscriptions:
            self._subscriptions.remove(subscription)

    def _end_subscriptions(self, reason: str) -> None:
        subscriptions, self._subscriptions = self._subscriptions, []
        for subscription in subscriptions:
            subscription.end(reason)

    async def _watch(self) -> None:
        """Notice the connection ending on its own (QEMU exited, reset) and close promptly."""
        while self._wire.runstate is Runstate.RUNNING:
            await self._wire.runstate_changed()
        await self._disconnect()

    def _disconnect(self) -> asyncio.Future[BaseException | None]:
        """Disconnect once, shared by every caller; the result is what ended the connection."""
        if self._closing is None:
            self._state = _State.CLOSED
            self._closing = asyncio.create_task(self._run_disconnect(), name=f"{self.name}: close")
        return asyncio.shield(self._closing)

    async def _run_disconnect(self) -> BaseException | None:
        try:
            await self._wire.disconnect()
        except Exception as exc:  # what ended the session (EOF, reset, …): returned, not raised
            _log.debug("%s: connection ended: %s", self.name, _describe(exc))
            return exc
        finally:
            self._end_subscriptions("connection closed")
        return None

    async def _lost(self, command: str) -> QMPError:
        """The typed error for a command whose connection ended before its reply."""
        cause = await self._disconnect()
        if isinstance(cause, ProtocolError):
            return QMPProtocolError(f"{command}: {self._where} broke the QMP protocol: {cause}")
        if cause is None:
            return QMPConnectionError(f"{command}: {self._where} was closed before the reply")
        return QMPConnectionError(f"{command}: {self._where}: {_describe(cause)}")


class _Connecting:
    """What :func:`connect_qmp` returns: await it for a client, or ``async with`` it."""

    def __init__(
        self,
        client: QMPClient,
        address: str | os.PathLike[str] | socket.socket,
        timeout: float | None,
        ask: str | None,
        sent: asyncio.Future[None] | None,
    ) -> None:
        self._client = client
        self._address = address
        self._timeout = timeout
        self._ask = ask
        self._sent = sent

    async def _open(self) -> QMPClient:
        await self._client.connect(
            self._address, timeout=self._timeout, ask=self._ask, sent=self._sent
        )
        return self._client

    def __await__(self) -> Generator[Any, None, QMPClient]:
        return self._open().__await__()

    async def __aenter__(self) -> QMPClient:
        return await self._open()

    async def __aexit__(self, *exc_info: object) -> None:
        await self._client.aclose()


def connect_qmp(
    address: str | os.PathLike[str] | socket.socket,
    *,
    timeout: float | None = CONNECT_TIMEOUT,
    name: str = "qmp",
    recorder: Recorder | None = None,
    ask: str | None = None,
    sent: asyncio.Future[None] | None = None,
) -> _Connecting:
    """Connect to a QMP monitor: ``client = await connect_qmp(path)``, or
    ``async with connect_qmp(path) as client: …`` (closed on leaving the block).

    See :meth:`QMPClient.connect` for ``address``, ``timeout``, ``ask`` and ``sent``.
    """
    return _Connecting(QMPClient(name=name, recorder=recorder), address, timeout, ask, sent)


def _connect_error(where: str, exc: ConnectError) -> QMPError:
    """Translate qemu.qmp's ConnectError by its root cause."""
    cause = exc.exc
    if isinstance(cause, ProtocolError):
        return QMPProtocolError(f"{where}: the peer does not speak QMP: {cause}")
    if isinstance(cause, EOFError):
        return QMPConnectionError(f"{where}: closed before the QMP handshake completed")
    return QMPConnectionError(f"{where}: {_describe(cause)}")


def _describe(exc: BaseException) -> str:
    if isinstance(exc, EOFError):
        return "QEMU closed the connection"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
