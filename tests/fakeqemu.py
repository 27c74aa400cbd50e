"""An in-process stand-in for a QEMU process, for driver tests that need no guest.

:class:`FakeLauncher` is a :class:`qctl.Launcher`: where the driver would spawn QEMU, it
takes the listening monitor sockets qctl passes and serves QMP on them from this process
(:class:`FakeQEMU`), with the bookkeeping QEMU itself keeps — devices by id, netdevs, fds
passed by name, the run state — so the driver's transactions run for real against it:

- every command (but the greeting's ``qmp_capabilities``) is logged in :attr:`FakeQEMU.log`
  as ``(command, arguments)``, for golden conversations;
- ``fail(command, desc)`` makes the next such command fail; ``stall(command)`` holds its
  reply until the returned event is set (the command still takes effect first, or not,
  as ``effect`` says); the guest answers ``device_del`` with DEVICE_DELETED unless
  ``guest_unplugs`` is False;
- other processes (the ``qctl`` command in a subprocess) reach it through the monitor
  sockets like a real QEMU; the "process" is this test process itself, so it counts as
  alive from anywhere until ``quit``;
- failover, as QEMU does it: a primary (``failover_pair_id``) stays hidden until the
  guest, once running, negotiates failover on its standby (FAILOVER_NEGOTIATED);
- live migration between two fakes over a real ``unix:`` stream: ``migrate-incoming``
  listens, ``migrate`` connects, unplugs the failover primaries (UNPLUG_PRIMARY,
  ``wait-unplug``), sends the "RAM" and completes; the destination completes when the
  whole stream arrived, and fails and exits (as QEMU does) when it breaks first.
  ``hold_migration(status)`` keeps the outgoing migration in a status, where a test can
  ``fail_migration`` it or the driver can ``migrate_cancel`` it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import socket
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from fakeqmp import DEFAULT_GREETING, _line, _split_objects

from qctl import Launcher
from qctl.qemu.process import ProcessIdentity, QEMUProcess, process_identity

Reply = dict[str, Any]


def _error(desc: str, error_class: str = "GenericError") -> Reply:
    return {"error": {"class": error_class, "desc": desc}}


def _options(argv: Sequence[str], option: str) -> list[dict[str, Any]]:
    """The properties of every ``option`` argument (JSON or key=value syntax)."""
    found = []
    for flag, value in itertools.pairwise(argv):
        if flag != option:
            continue
        if value.startswith("{"):
            found.append(dict(json.loads(value)))
        else:
            found.append(dict(p.split("=", 1) for p in value.split(",") if "=" in p))
    return found


def _ids(argv: Sequence[str], option: str) -> set[str]:
    """The ``id`` of every ``option`` argument."""
    return {str(props["id"]) for props in _options(argv, option) if props.get("id")}


def _primaries(argv: Sequence[str]) -> dict[str, str]:
    """The failover primaries on the command line: device id → its standby's id."""
    return {
        str(props["id"]): str(props["failover_pair_id"])
        for props in _options(argv, "-device")
        if props.get("id") and props.get("failover_pair_id")
    }


#: the statuses of a migration under way (``query-migrate``)
_MIGRATING = frozenset({"setup", "wait-unplug", "active"})
#: what the "RAM" of a fake guest amounts to, in ``query-migrate``'s figures
_RAM = {"transferred": 4096, "remaining": 0, "total": 4096, "dirty-sync-count": 1}


class FakeQEMU:
    """What a QEMU keeps that the driver cares about, served on its monitor sockets."""

    def __init__(self, argv: Sequence[str]) -> None:
        self.argv = list(argv)
        #: failover primaries (id → standby id), hidden until the guest negotiates
        self.primaries = _primaries(argv)
        self.peripherals = _ids(argv, "-device") - set(self.primaries)
        self.netdevs = _ids(argv, "-netdev")
        self.fds: set[str] = set()
        if "-incoming" in argv:
            self.status = "inmigrate"
        else:
            self.status = "prelaunch" if "-S" in argv else "running"
        #: the guest's virtio-net negotiates failover as soon as it runs (``cont``)
        self.guest_negotiates_failover = True
        #: ``query-migrate``'s answer
        self.migration: dict[str, Any] = {}
        #: set when the outgoing migration reaches a status held by :meth:`hold_migration`
        self.migration_held: dict[str, asyncio.Event] = {}
        self._migration_holds: dict[str, asyncio.Event] = {}
        self._outgoing: asyncio.Future[Any] | None = None
        self.pending_unplug: set[str] = set()
        self.guest_unplugs = True
        self.guest_answers_acpi = True
        self.log: list[tuple[str, dict[str, Any]]] = []
        self.exited = asyncio.Event()
        self._tasks: set[asyncio.Future[Any]] = set()
        self._conns: set[socket.socket] = set()
        self._incoming: list[int] = []
        self._held: dict[str, int] = {}
        self._before_reply: list[str] = []
        self._faults: dict[str, Reply] = {}
        self._stalls: dict[str, tuple[asyncio.Event, bool]] = {}
        self.stalled: dict[str, asyncio.Event] = {}

    # -- faults ----------------------------------------------------------------------------
    def fail(self, command: str, desc: str, error_class: str = "GenericError") -> None:
        """Make the next ``command`` fail with QEMU's error ``desc``."""
        self._faults[command] = _error(desc, error_class)

    def stall(self, command: str, *, effect: bool = True) -> asyncio.Event:
        """Hold the reply to the next ``command`` until the returned event is set.

        With ``effect`` the command takes effect at once (QEMU did it, the reply is late);
        without, nothing happens until the event is set. ``stalled[command]`` is set when
        the command has arrived.
        """
        release = asyncio.Event()
        self._stalls[command] = (release, effect)
        self.stalled[command] = asyncio.Event()
        return release

    # -- serving ---------------------------------------------------------------------------
    async def serve(self, listeners: list[socket.socket]) -> None:
        """Serve QMP on each listening socket (as QEMU does on its ``-chardev`` fds).

        A plain socket server, not asyncio streams: the fds qctl passes with ``getfd``
        arrive as SCM_RIGHTS data, and are held as QEMU would hold them (a tap lives as
        long as they are open).
        """
        for listener in listeners:
            listener.setblocking(False)
            self._spawn(self._accept(listener))

    def _spawn(self, work: Any) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _accept(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        try:
            while not self.exited.is_set():
                conn, _ = await loop.sock_accept(listener)
                conn.setblocking(False)
                self._conns.add(conn)
                self._spawn(self._session(conn))
        finally:
            listener.close()

    async def _recv(self, conn: socket.socket) -> tuple[bytes, list[int]]:
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()
        fd = conn.fileno()  # still known here if exit() closes conn meanwhile

        def wake() -> None:
            if not ready.done():
                ready.set_result(None)

        loop.add_reader(fd, wake)
        try:
            await ready
        finally:
            loop.remove_reader(fd)
        data, fds, _, _ = socket.recv_fds(conn, 65536, 16)
        return data, fds

    async def _send(self, conn: socket.socket, message: dict[str, Any]) -> None:
        with contextlib.suppress(OSError):
            await asyncio.get_running_loop().sock_sendall(conn, _line(message))

    async def _session(self, conn: socket.socket) -> None:
        try:
            await self._send(conn, DEFAULT_GREETING)
            pending = b""
            while True:
                try:
                    data, fds = await self._recv(conn)
                except OSError:
                    break
                self._incoming.extend(fds)
                if not data:
                    break
                requests, pending = _split_objects(pending + data)
                for request in requests:
                    self._spawn(self._respond(conn, request))
        finally:
            self._conns.discard(conn)
            conn.close()

    async def _respond(self, conn: socket.socket, request: dict[str, Any]) -> None:
        command = str(request.get("execute"))
        arguments = request.get("arguments", {})
        if command == "qmp_capabilities":
            reply: Reply | None = {"return": {}}
        else:
            reply = await self._handle(command, arguments)
        if reply is not None:
            if "id" in request:
                reply = {**reply, "id": request["id"]}
            await self._send(conn, reply)

    async def _handle(self, command: str, arguments: dict[str, Any]) -> Reply | None:
        reply = await self._outcome(command, arguments)
        while self._before_reply:  # as QEMU, which sends STOP/RESUME before its reply
            await self.emit(self._before_reply.pop(0))
        return reply

    async def _outcome(self, command: str, arguments: dict[str, Any]) -> Reply | None:
        self.log.append((command, arguments))
        if command in self._faults:
            return self._faults.pop(command)
        if command in self._stalls:
            release, effect = self._stalls.pop(command)
            self.stalled[command].set()
            reply = self._do(command, arguments) if effect else None
            await release.wait()
            return reply if effect else self._do(command, arguments)
        return self._do(command, arguments)

    async def emit(self, name: str, data: dict[str, Any] | None = None) -> None:
        """Send an event on every monitor."""
        event: dict[str, Any] = {"event": name, "timestamp": {"seconds": 0, "microseconds": 0}}
        if data is not None:
            event["data"] = data
        for conn in list(self._conns):
            await self._send(conn, event)

    def _later(self, name: str, data: dict[str, Any] | None = None) -> None:
        loop = asyncio.get_running_loop()
        loop.call_later(0.01, lambda: self._spawn(self.emit(name, data)))

    def _do(self, command: str, args: dict[str, Any]) -> Reply:
        ok: Reply = {"return": {}}
        if command == "query-status":
            return {"return": {"status": self.status, "running": self.status == "running"}}
        if command in ("cont", "stop"):
            self.status = "running" if command == "cont" else "paused"
            self._before_reply.append("RESUME" if command == "cont" else "STOP")
            if command == "cont" and self.guest_negotiates_failover:
                self._negotiate_failover()
            return ok
        if command in ("migrate-set-capabilities", "migrate-set-parameters"):
            return ok
        if command == "query-migrate":
            return {"return": self.migration}
        if command == "migrate":
            if self.migration.get("status") in _MIGRATING:
                return _error("There's a migration process in progress")
            scheme, _, path = str(args["uri"]).partition(":")
            if scheme != "unix":
                return _error(f"the fake QEMU migrates over unix: only, not {args['uri']}")
            self.migration = {"status": "setup"}
            self._outgoing = asyncio.ensure_future(self._migrate_out(path))
            self._tasks.add(self._outgoing)
            self._outgoing.add_done_callback(self._tasks.discard)
            return ok
        if command == "migrate_cancel":
            if self.migration.get("status") in _MIGRATING:
                self._end_outgoing("cancelled")
            return ok
        if command == "migrate-incoming":
            return self._listen_incoming(str(args["uri"]))
        if command == "system_powerdown":
            if self.guest_answers_acpi and self.status == "running":
                self._later("SHUTDOWN", {"guest": True, "reason": "guest-shutdown"})
                asyncio.get_running_loop().call_later(0.05, self.exit)
            return ok
        if command == "getfd":
            if not self._incoming:
                return _error("No file descriptor supplied via SCM_RIGHTS")
            self._close(args["fdname"])
            self._held[args["fdname"]] = self._incoming.pop(0)
            self.fds.add(args["fdname"])
            return ok
        if command == "closefd":
            if args["fdname"] not in self.fds:
                return _error(f"File descriptor named '{args['fdname']}' not found")
            self._close(args["fdname"])
            self.fds.discard(args["fdname"])
            return ok
        if command == "netdev_add":
            if args["id"] in self.netdevs:
                return _error(f"Duplicate ID '{args['id']}' for netdev")
            self.netdevs.add(args["id"])
            for key in ("fd", "fds", "vhostfd", "vhostfds"):
                for name in str(args.get(key, "")).split(":"):
                    if name in self.fds:  # the netdev holds it now
                        self.fds.discard(name)
                        self._held[f"{args['id']}/{name}"] = self._held.pop(name)
            return ok
        if command == "netdev_del":
            if args["id"] not in self.netdevs:
                return _error(f"Device '{args['id']}' not found", "DeviceNotFound")
            self.netdevs.discard(args["id"])
            for key in [k for k in self._held if k.startswith(f"{args['id']}/")]:
                self._close(key)
            return ok
        if command == "device_add":
            if args["id"] in self.peripherals:
                return _error(f"Duplicate device ID '{args['id']}'")
            if args.get("failover_pair_id"):
                # A failover primary is plugged once the guest, running, has negotiated
                # (at once if it has already; the next ``cont`` otherwise).
                self.primaries[args["id"]] = args["failover_pair_id"]
                if self.status == "running" and self.guest_negotiates_failover:
                    self.peripherals.add(args["id"])
                return ok
            self.peripherals.add(args["id"])
            return ok
        if command == "device_del":
            ident = args["id"]
            if ident not in self.peripherals:
                return _error(f"Device '{ident}' not found", "DeviceNotFound")
            if ident in self.pending_unplug:
                return _error(f"Device {ident} is already in the process of unplug")
            self.pending_unplug.add(ident)
            if self.guest_unplugs:
                self.unplug_now(ident)
            return ok
        if command == "qom-list":
            names = sorted(self.peripherals)
            return {"return": [{"name": n, "type": "child<virtio-net-pci>"} for n in names]}
        if command == "human-monitor-command":
            lines = [f"{n}: index=0,type=tap,fds=x" for n in sorted(self.netdevs)]
            return {"return": "\r\n".join(lines)}
        if command == "set_link":
            return ok
        if command == "quit":
            asyncio.get_running_loop().call_later(0.01, self.exit)
            return ok
        return _error(f"The command {command} has not been found", "CommandNotFound")

    def _negotiate_failover(self) -> None:
        """The running guest's virtio-net asks for its primaries: QEMU plugs each hidden
        one and says FAILOVER_NEGOTIATED (on the standby)."""
        for primary, standby in self.primaries.items():
            if primary not in self.peripherals:
                self.peripherals.add(primary)
                self._later("FAILOVER_NEGOTIATED", {"device-id": standby})

    # -- migration -------------------------------------------------------------------------
    def hold_migration(self, status: str) -> asyncio.Event:
        """Keep the next outgoing migration in ``status`` (``setup``, ``wait-unplug``,
        ``active``) until the returned event is set; ``migration_held[status]`` is set when
        it gets there."""
        release = asyncio.Event()
        self._migration_holds[status] = release
        self.migration_held[status] = asyncio.Event()
        return release

    def fail_migration(self, desc: str) -> None:
        """The outgoing migration fails now with QEMU's error ``desc`` (the stream to the
        destination closes); the guest runs on here, its primaries plugged again."""
        self._end_outgoing("failed", desc)

    def _end_outgoing(self, status: str, desc: str | None = None) -> None:
        if self._outgoing is not None:
            self._outgoing.cancel()
        self.migration = {"status": status} | ({"error-desc": desc} if desc else {})
        self._later("MIGRATION", {"status": status})

    async def _migration_step(self, status: str, **figures: Any) -> None:
        """Enter ``status``: ``query-migrate`` and a MIGRATION event say so; wait there
        while :meth:`hold_migration` holds it."""
        self.migration = {"status": status, **figures}
        await self.emit("MIGRATION", {"status": status})
        release = self._migration_holds.pop(status, None)
        if release is not None:
            self.migration_held[status].set()
            await release.wait()

    async def _migrate_out(self, path: str) -> None:
        """Send the guest to the destination listening on ``path``: unplug the plugged
        failover primaries, then the "RAM" (``ram`` lines) and the end (``end``)."""
        await self._migration_step("setup")
        try:
            _, writer = await asyncio.open_unix_connection(path)
        except OSError as exc:
            desc = f"Failed to connect to '{path}': {exc.strerror}"
            self.migration = {"status": "failed", "error-desc": desc}
            await self.emit("MIGRATION", {"status": "failed"})
            return
        try:
            unplugged = [p for p in self.primaries if p in self.peripherals]
            for primary in unplugged:
                await self.emit("UNPLUG_PRIMARY", {"device-id": primary})
            if unplugged:
                await self._migration_step("wait-unplug")
            await self._migration_step("active", ram=dict(_RAM))
            await self.emit("MIGRATION_PASS", {"pass": 1})
            try:
                writer.write(b"ram\nend\n")
                await writer.drain()
            except OSError as exc:  # the destination is gone
                desc = f"Unable to write to socket: {exc.strerror or exc}"
                self.migration = {"status": "failed", "error-desc": desc}
                await self.emit("MIGRATION", {"status": "failed"})
                return
            self.status = "postmigrate"
            await self.emit("STOP")
            done = {"status": "completed", "total-time": 20, "downtime": 2, "ram": dict(_RAM)}
            self.migration = done
            await self.emit("MIGRATION", {"status": "completed"})
        finally:
            writer.close()

    def _listen_incoming(self, uri: str) -> Reply:
        """``migrate-incoming``: listen on ``unix:PATH`` for the source's stream."""
        if self.status != "inmigrate":
            return _error("'-incoming' was not specified on the command line")
        scheme, _, path = uri.partition(":")
        if scheme != "unix":
            return _error(f"the fake QEMU migrates over unix: only, not {uri}")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with contextlib.suppress(FileNotFoundError):  # QEMU replaces a stale socket
                os.unlink(path)
            listener.bind(path)
            listener.listen(1)
        except OSError as exc:
            listener.close()
            return _error(f"Failed to bind socket: {exc.strerror}")
        listener.setblocking(False)
        self.migration = {"status": "setup"}
        self._spawn(self._migrate_in(listener))
        return {"return": {}}

    async def _migrate_in(self, listener: socket.socket) -> None:
        """Load the guest from the first source that connects; a stream that ends before
        ``end`` fails the migration and QEMU exits, as QEMU does."""
        try:
            conn, _ = await asyncio.get_running_loop().sock_accept(listener)
        finally:
            listener.close()
        reader, writer = await asyncio.open_unix_connection(sock=conn)
        try:
            await self._migration_step("active")
            line = await reader.readline()
            while line == b"ram\n":
                line = await reader.readline()
        finally:
            writer.close()
        if line != b"end\n":
            desc = "load of migration failed: Input/output error"
            self.migration = {"status": "failed", "error-desc": desc}
            await self.emit("MIGRATION", {"status": "failed"})
            self.exit()
            return
        self.status = "paused"
        await self._migration_step("completed", ram=dict(_RAM))

    def unplug_now(self, ident: str) -> None:
        """The guest released ``ident``: QEMU drops it and says DEVICE_DELETED."""
        self.peripherals.discard(ident)
        self.pending_unplug.discard(ident)
        self._later("DEVICE_DELETED", {"device": ident, "path": f"/machine/peripheral/{ident}"})

    def _close(self, key: str) -> None:
        fd = self._held.pop(key, None)
        if fd is not None:
            os.close(fd)

    def exit(self) -> None:
        """QEMU exits: monitors close, fds it held close, the process is gone."""
        if self.exited.is_set():
            return
        self.exited.set()
        for task in list(self._tasks):
            task.cancel()
        for conn in list(self._conns):
            conn.close()
        for key in list(self._held):
            self._close(key)
        for fd in self._incoming:
            os.close(fd)
        self._incoming.clear()

    def conversation(
        self, *, since: int = 0, skip: Sequence[str] = ("query-status", "x-query-virtio")
    ) -> list[str]:
        """The log from entry ``since`` on as golden lines: ``command {json arguments}``."""
        return [
            f"{command} {json.dumps(args, sort_keys=True)}"
            for command, args in self.log[since:]
            if command not in skip
        ]


class FakeProcess(QEMUProcess):
    """The "QEMU process" of a :class:`FakeQEMU`: this test process, alive until quit."""

    def __init__(self, fake: FakeQEMU, identity: ProcessIdentity, log_path: Path) -> None:
        super().__init__(identity, log_path)
        self.fake = fake

    @property
    def returncode(self) -> int | None:
        return 0 if self.fake.exited.is_set() else None

    def alive(self) -> bool:
        return not self.fake.exited.is_set()

    async def wait(self) -> int | None:
        await self.fake.exited.wait()
        return 0

    async def stop(self, grace: float = 5.0) -> None:
        self.fake.exit()


class FakeLauncher(Launcher):
    """Starts :class:`FakeQEMU` instances instead of QEMU (see the module)."""

    def __init__(self) -> None:
        self.started: list[FakeQEMU] = []
        #: called with each fake before it serves, e.g. to make its first commands fail
        self.on_spawn: Callable[[FakeQEMU], None] | None = None
        self._by_log: dict[Path, FakeProcess] = {}

    @property
    def qemu(self) -> FakeQEMU:
        """The last fake started."""
        return self.started[-1]

    async def spawn(
        self,
        argv: Sequence[str],
        *,
        log_path: Path,
        pass_fds: Sequence[int] = (),
        env: Mapping[str, str] | None = None,
        die_with_owner: bool = False,
    ) -> QEMUProcess:
        fake = FakeQEMU(argv)
        if self.on_spawn is not None:
            self.on_spawn(fake)
        listeners = []
        for fd in pass_fds:
            with contextlib.suppress(OSError):
                sock = socket.socket(fileno=os.dup(fd))
                if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
                    listeners.append(sock)
                else:
                    sock.close()
        await fake.serve(listeners)
        os.close(os.open(log_path, os.O_CREAT | os.O_WRONLY, 0o600))
        self.started.append(fake)
        process = FakeProcess(fake, process_identity(os.getpid()), log_path)
        self._by_log[log_path] = process
        return process

    def adopt(self, identity: ProcessIdentity, log_path: Path) -> QEMUProcess:
        return self._by_log.get(log_path) or super().adopt(identity, log_path)
