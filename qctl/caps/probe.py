"""Probing what a QEMU can do: spawn the binary the way a probe should, ask it over QMP.

:func:`probe` either starts the binary (paused, no user config, no default devices, no
display, machine ``none`` with KVM if possible else TCG, QMP on a UNIX socket in a private
0700 temporary directory), or talks to a QEMU already running, given its QMP socket. Then it
asks, concurrently:

- ``query-version``, ``query-commands``, ``query-events`` (gone since QEMU 6.0; the schema
  lists the events anyway), ``query-qmp-schema``, ``query-machines``, ``query-kvm``;
- ``qom-list-types``, then ``device-list-properties`` for each type of
  :data:`~qctl.caps.flags.PROBED_DEVICES` the binary has.

Every way out — success, a typed error, cancellation — stops the process (``quit``, else
SIGTERM, then SIGKILL), reaps it and removes the directory. A binary that exits reports a
:class:`~qctl.errors.ProcessError` with its exit status and the end of its stderr; one that
never answers a :class:`~qctl.errors.QMPTimeoutError` after ``timeout`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Awaitable, Coroutine, Iterator
from typing import Any, TypeVar

from qctl.caps.flags import PROBED_DEVICES, SCHEMA_PATHS
from qctl.caps.hostfact import host_facts
from qctl.caps.install import QEMUInstall, locate_install
from qctl.caps.model import HostFacts, MachineType, QEMUCaps
from qctl.caps.schema import QAPISchema
from qctl.errors import (
    ProcessError,
    QctlError,
    QMPCommandError,
    QMPConnectionError,
    QMPProtocolError,
    QMPTimeoutError,
)
from qctl.qmp import QMPClient, Recorder, connect_qmp

__all__ = ["PROBE_TIMEOUT", "probe", "resolve_binary"]

_log = logging.getLogger(__name__)
_T = TypeVar("_T")

# Seconds a whole probe may take, spawn to exit.
PROBE_TIMEOUT = 30.0
# Seconds QEMU gets to exit after quit or SIGTERM, before the next step.
_STOP_GRACE = 5.0
# After the monitor connection drops: how long to wait for the exit status that explains it.
_EXIT_GRACE = 1.0
# Polling for QEMU's socket: first and longest pause, in seconds.
_DIAL_FIRST, _DIAL_MAX = 0.001, 0.008
_STDERR_TAIL_LINES = 5


async def probe(
    binary: str | os.PathLike[str] | None = None,
    *,
    qmp_socket: str | os.PathLike[str] | None = None,
    timeout: float = PROBE_TIMEOUT,  # noqa: ASYNC109 - bounds spawn and all queries, typed error
    host: HostFacts | None = None,
    recorder: Recorder | None = None,
) -> QEMUCaps:
    """Probe ``binary`` (a path, or a command name looked up on ``PATH``), or the running
    QEMU listening on ``qmp_socket``; exactly one of them. No cache is involved: see
    :class:`~qctl.caps.cache.CapsCache` for that.

    ``host`` replaces the host facts, found with :func:`~qctl.caps.hostfact.host_facts`
    otherwise; ``recorder`` receives the QMP conversation.

    :raise ProcessError: the binary is missing, cannot run, or exited.
    :raise QMPTimeoutError: no complete answer within ``timeout`` seconds.
    :raise QMPConnectionError: the socket is missing or the connection dropped.
    :raise QMPProtocolError: the peer does not speak QMP, or answered nonsense.
    """
    if (binary is None) == (qmp_socket is None):
        raise ValueError("probe needs a binary or a QMP socket (exactly one)")
    facts = host_facts() if host is None else host
    path = resolve_binary(binary) if binary is not None else os.fspath(qmp_socket or "")
    try:
        async with asyncio.timeout(timeout):
            if binary is not None:
                return await _probe_binary(path, facts, recorder)
            async with connect_qmp(path, timeout=None, name="probe", recorder=recorder) as client:
                return await _gather(client, None, facts)
    except TimeoutError as exc:
        raise QMPTimeoutError(f"{path}: no complete QMP answer within {timeout:g}s") from exc


def resolve_binary(binary: str | os.PathLike[str]) -> str:
    """The real path of a binary given as a path, or as a command name found on ``PATH``.

    :raise ProcessError: when there is no such file.
    """
    text = os.fspath(binary)
    found = text if os.sep in text else shutil.which(text)
    if found is None or not os.path.exists(found):
        raise ProcessError(f"{text}: no such QEMU binary")
    return os.path.realpath(found)


def _argv(binary: str, install: QEMUInstall, qmp_path: str) -> list[str]:
    """The probe's command line: paused, bare, machine 'none', QMP on ``qmp_path``."""
    return [
        binary,
        *install.args(),
        "-S",
        "-no-user-config",
        "-nodefaults",
        "-nographic",
        "-machine",
        "none,accel=kvm:tcg",
        "-qmp",
        f"unix:{qmp_path.replace(',', ',,')},server=on,wait=off",
    ]


async def _probe_binary(path: str, host: HostFacts, recorder: Recorder | None) -> QEMUCaps:
    """Spawn, probe, stop; the process is reaped and the directory gone on every way out
    (a timeout around this cancels it, and the cleanup still runs to the end)."""
    with tempfile.TemporaryDirectory(prefix="qctl-probe-") as workdir:  # mode 0700
        qmp_path = os.path.join(workdir, "qmp.sock")
        log_path = os.path.join(workdir, "stderr")
        install = locate_install(path)
        proc = await _spawn(_argv(path, install, qmp_path), log_path, install.environ())
        try:
            return await _probe_child(proc, path, qmp_path, log_path, host, recorder)
        finally:
            await _shielded(_stop(proc))


async def _spawn(
    argv: list[str], log_path: str, env: dict[str, str] | None
) -> asyncio.subprocess.Process:
    """Start ``argv`` with stdin and stdout on /dev/null and stderr into ``log_path``."""
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        return await asyncio.create_subprocess_exec(
            *argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log, env=env
        )
    except OSError as exc:
        raise ProcessError(f"cannot run {argv[0]}: {exc.strerror or exc}") from exc
    finally:
        os.close(log)


async def _probe_child(
    proc: asyncio.subprocess.Process,
    path: str,
    qmp_path: str,
    log_path: str,
    host: HostFacts,
    recorder: Recorder | None,
) -> QEMUCaps:
    async def connect_and_gather() -> QEMUCaps:
        await client.connect(await _dial(qmp_path), timeout=None)
        return await _gather(client, path, host)

    async with QMPClient(name=f"probe {os.path.basename(path)}", recorder=recorder) as client:
        caps = await _until_exit(proc, path, log_path, connect_and_gather())
        await client.quit()
    await proc.wait()
    return caps


async def _dial(path: str) -> socket.socket:
    """Connect to QEMU's socket as soon as it listens (it appears during QEMU's startup)."""
    loop = asyncio.get_running_loop()
    pause = _DIAL_FIRST
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, path)
            return sock
        except (FileNotFoundError, ConnectionRefusedError):
            sock.close()
        except OSError as exc:
            sock.close()
            raise QMPConnectionError(f"QMP socket {path}: {exc.strerror or exc}") from exc
        except BaseException:
            sock.close()
            raise
        await asyncio.sleep(pause)
        pause = min(pause * 2, _DIAL_MAX)


async def _until_exit(
    proc: asyncio.subprocess.Process, path: str, log_path: str, work: Awaitable[_T]
) -> _T:
    """Run ``work`` unless the process exits first; then raise its exit as a ProcessError."""
    job = asyncio.ensure_future(work)
    exited = asyncio.ensure_future(proc.wait())
    try:
        await asyncio.wait((job, exited), return_when=asyncio.FIRST_COMPLETED)
        if job.done():
            try:
                return job.result()
            except QMPConnectionError as exc:
                # The monitor went away: if QEMU is exiting, its status says why.
                done, _ = await asyncio.wait((exited,), timeout=_EXIT_GRACE)
                if not done:
                    raise
                raise _exit_error(proc, path, log_path) from exc
        raise _exit_error(proc, path, log_path)
    finally:
        await _cancel(job, exited)


def _exit_error(proc: asyncio.subprocess.Process, path: str, log_path: str) -> ProcessError:
    code = proc.returncode
    how = f"was killed by signal {-code}" if code is not None and code < 0 else f"exited ({code})"
    return ProcessError(
        f"{path} {how} before answering QMP", returncode=code, stderr_tail=_tail(log_path)
    )


def _tail(log_path: str) -> str:
    """The last lines QEMU wrote to stderr."""
    try:
        with open(log_path, "rb") as log:
            log.seek(0, os.SEEK_END)
            log.seek(max(0, log.tell() - 4096))
            text = log.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-_STDERR_TAIL_LINES:])


async def _cancel(*futures: asyncio.Future[Any]) -> None:
    """Cancel ``futures``, wait for them, and mark their outcomes as seen."""
    for future in futures:
        future.cancel()
    await asyncio.wait(futures)
    for future in futures:
        if not future.cancelled():
            future.exception()


async def _stop(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM, wait a grace period, SIGKILL, and reap. Nothing if it has exited."""
    if proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()
    try:
        async with asyncio.timeout(_STOP_GRACE):
            await proc.wait()
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()


async def _shielded(cleanup: Coroutine[Any, Any, None]) -> None:
    """Run ``cleanup`` to the end even if the caller is cancelled meanwhile, then re-raise
    that cancellation."""
    task = asyncio.ensure_future(cleanup)
    cancelled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError
    task.result()


async def _gather(client: QMPClient, binary: str | None, host: HostFacts) -> QEMUCaps:
    """Ask every question at once and build the caps from the answers."""
    failure: BaseException | None = None
    try:
        async with asyncio.TaskGroup() as group:
            devices = group.create_task(_types_and_devices(client))
            schema = group.create_task(client.execute("query-qmp-schema", timeout=None))
            version = group.create_task(client.execute("query-version", timeout=None))
            commands = group.create_task(client.execute("query-commands", timeout=None))
            events = group.create_task(_events(client))
            machines = group.create_task(client.execute("query-machines", timeout=None))
            kvm = group.create_task(client.execute("query-kvm", timeout=None))
            options = group.create_task(_command_line_options(client))
    except ExceptionGroup as exc:
        failure = _first_typed(exc)
        if failure is None:
            raise
    if failure is not None:
        raise failure  # one typed error, not a group: the others share its cause
    qom_types, properties = devices.result()
    with _reply_shape("query-version"):
        qemu = version.result()["qemu"]
        number = (int(qemu["major"]), int(qemu["minor"]), int(qemu["micro"]))
        package = str(version.result().get("package", ""))
    with _reply_shape("query-qmp-schema"):
        qapi = QAPISchema(schema.result())
        schema_paths = frozenset(p for p in SCHEMA_PATHS if qapi.resolves(p))
    with _reply_shape("query-events"):
        event_names = qapi.events() | {e["name"] for e in events.result()}
    with _reply_shape("query-commands"):
        command_names = frozenset(c["name"] for c in commands.result())
    with _reply_shape("query-machines"):
        machine_types = tuple(
            MachineType(m["name"], m.get("alias"), bool(m.get("is-default", False)))
            for m in machines.result()
        )
    with _reply_shape("query-kvm"):
        kvm_present, kvm_enabled = bool(kvm.result()["present"]), bool(kvm.result()["enabled"])
    return QEMUCaps(
        binary=binary,
        version=number,
        package=package,
        commands=command_names,
        events=event_names,
        qom_types=qom_types,
        device_properties=properties,
        machines=machine_types,
        kvm_present=kvm_present,
        kvm_enabled=kvm_enabled,
        schema_paths=schema_paths,
        command_line_options=options.result(),
        host=host,
    )


async def _events(client: QMPClient) -> list[Any]:
    """``query-events``' reply, or nothing where QEMU no longer has the command."""
    try:
        reply: list[Any] = await client.execute("query-events", timeout=None)
    except QMPCommandError as exc:
        if exc.error_class == "CommandNotFound":
            return []
        raise
    return reply


async def _command_line_options(client: QMPClient) -> frozenset[str]:
    """Option groups and ``group.parameter`` names from ``query-command-line-options``, or
    nothing where QEMU does not have the command."""
    try:
        reply = await client.execute("query-command-line-options", timeout=None)
    except QMPCommandError as exc:
        if exc.error_class == "CommandNotFound":
            return frozenset()
        raise
    with _reply_shape("query-command-line-options"):
        names = {str(o["option"]) for o in reply}
        names |= {f"{o['option']}.{p['name']}" for o in reply for p in o["parameters"]}
    return frozenset(names)


async def _types_and_devices(
    client: QMPClient,
) -> tuple[frozenset[str], dict[str, dict[str, str]]]:
    """QOM type names, and the properties of the probed devices among them."""
    reply = await client.execute("qom-list-types", timeout=None)
    with _reply_shape("qom-list-types"):
        names = frozenset(str(t["name"]) for t in reply)
    async with asyncio.TaskGroup() as group:
        tasks = {
            device: group.create_task(_device_properties(client, device))
            for device in PROBED_DEVICES
            if device in names
        }
    found = {device: task.result() for device, task in tasks.items()}
    return names, {device: props for device, props in found.items() if props is not None}


async def _device_properties(client: QMPClient, device: str) -> dict[str, str] | None:
    """``{property: type}`` of ``device``; ``None`` when QEMU will not list them."""
    try:
        reply = await client.execute("device-list-properties", {"typename": device}, timeout=None)
    except QMPCommandError as exc:
        _log.debug("no properties for %s: %s", device, exc)
        return None
    with _reply_shape("device-list-properties"):
        return {str(p["name"]): str(p["type"]) for p in reply}


@contextlib.contextmanager
def _reply_shape(command: str) -> Iterator[None]:
    """Turn a reply of the wrong shape into a QMPProtocolError naming the command."""
    try:
        yield
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise QMPProtocolError(
            f"{command}: unexpected reply ({type(exc).__name__}: {exc})"
        ) from exc


def _first_typed(group: BaseExceptionGroup[BaseException]) -> QctlError | None:
    """The first error of a (nested) task group failure when all of them are qctl errors;
    ``None`` when any is something else (a bug must not hide behind a typed error)."""
    leaves: list[BaseException] = []
    pending: list[BaseException] = [group]
    while pending:
        exc = pending.pop(0)
        if isinstance(exc, BaseExceptionGroup):
            pending[:0] = exc.exceptions
        else:
            leaves.append(exc)
    if all(isinstance(leaf, QctlError) for leaf in leaves):
        first = leaves[0]
        assert isinstance(first, QctlError)
        return first
    return None
