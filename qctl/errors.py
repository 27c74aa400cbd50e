"""The whole qctl exception tree.

Every error qctl raises on purpose derives from :class:`QctlError`, with one branch
per kind of failure a user can act on::

    QctlError
    ├── ConfigError              bad input: XML or definitions (file, line, element)
    │   ├── XMLSyntaxError       not well-formed XML (line and column)
    │   └── ValidationError      well-formed, but wrong (element path and reason)
    ├── UnsupportedError         this QEMU or host cannot do what was asked (names the capability)
    ├── QMPError                 talking to QEMU's monitor
    │   ├── QMPConnectionError   cannot connect, or the connection dropped
    │   ├── QMPProtocolError     the peer does not speak QMP
    │   ├── QMPTimeoutError      no answer within the allowed time
    │   └── QMPCommandError      QEMU refused a command (its error class and text)
    ├── HostError                the host side: netlink, sysfs, devices
    │   ├── NetlinkError         a netlink request failed (errno)
    │   ├── SysfsError           a sysfs read or write failed
    │   └── ResourceBusyError    a host resource is already in use
    ├── ProcessError             a QEMU process failed to start or exited (exit code, stderr tail)
    ├── StateError               the per-domain state (status file, locks) is missing or damaged
    │   └── JobAbortedError      the job was aborted (``qctl job-abort``) and rolled back
    ├── HotplugError             attach/detach failed (device alias and stage)
    ├── MigrationError           a live migration was refused or failed (the stage)
    └── ConsoleError             the guest's console did not show what was waited for
                                 (timeout, a failure pattern, QEMU exited; the last lines)

``asyncio.CancelledError`` is never wrapped. When a rollback fails while handling an
error, the original error is raised and the rollback failure is attached to it as a note
(see :func:`add_rollback_note`).

This module imports nothing from qctl.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "ConsoleError",
    "HostError",
    "HotplugError",
    "JobAbortedError",
    "MigrationError",
    "NetlinkError",
    "ProcessError",
    "QMPCommandError",
    "QMPConnectionError",
    "QMPError",
    "QMPProtocolError",
    "QMPTimeoutError",
    "QctlError",
    "ResourceBusyError",
    "StateError",
    "SysfsError",
    "UnsupportedError",
    "ValidationError",
    "XMLSyntaxError",
    "add_rollback_note",
]


class QctlError(Exception):
    """Base of every error qctl raises on purpose."""


class ConfigError(QctlError):
    """A configuration document is wrong.

    ``source`` names the file (or ``<string>``), ``line`` the 1-based line of the
    offending element when known, and ``path`` the element path (``/domain/devices/interface[2]``).
    ``str()`` gives ``FILE:LINE: message`` so the CLI can print it as is.
    """

    def __init__(
        self,
        message: str,
        *,
        source: str | None = None,
        line: int | None = None,
        path: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.source = source
        self.line = line
        self.path = path

    def __str__(self) -> str:
        where = self.source or "<string>"
        if self.line is not None:
            where = f"{where}:{self.line}"
        text = self.message
        if self.path:
            text = f"{self.path}: {text}"
        return f"{where}: {text}"


class XMLSyntaxError(ConfigError):
    """The document is not well-formed XML, or uses a refused construct (entities, DTDs)."""

    def __init__(
        self,
        message: str,
        *,
        source: str | None = None,
        line: int | None = None,
        column: int | None = None,
    ) -> None:
        super().__init__(message, source=source, line=line)
        self.column = column

    def __str__(self) -> str:
        where = self.source or "<string>"
        if self.line is not None:
            where = f"{where}:{self.line}"
            if self.column is not None:
                where = f"{where}:{self.column}"
        return f"{where}: {self.message}"


class ValidationError(ConfigError):
    """The document is well-formed but breaks a rule (bad MAC, duplicate alias, …)."""


class UnsupportedError(QctlError):
    """The QEMU binary or the host lacks something the configuration needs.

    ``capability`` names what is missing (a capability flag name, or a host facility).
    """

    def __init__(self, message: str, *, capability: str | None = None) -> None:
        super().__init__(message)
        self.capability = capability


class QMPError(QctlError):
    """Base of errors talking to QEMU's QMP monitor."""


class QMPConnectionError(QMPError):
    """Could not connect to the monitor, or the connection was lost."""


class QMPProtocolError(QMPError):
    """The peer did not behave like a QMP server (bad greeting, bad framing)."""


class QMPTimeoutError(QMPError):
    """The monitor did not answer in time."""


class QMPCommandError(QMPError):
    """QEMU answered a command with an error.

    ``error_class`` is QEMU's class (``GenericError``, ``DeviceNotFound``, …) and ``desc``
    its human text, both kept exactly as QEMU sent them.
    """

    def __init__(self, command: str, error_class: str, desc: str) -> None:
        super().__init__(f"{command}: {error_class}: {desc}")
        self.command = command
        self.error_class = error_class
        self.desc = desc


class HostError(QctlError):
    """Base of errors from the host side (netlink, sysfs, device nodes)."""


class NetlinkError(HostError):
    """A netlink request failed; ``errno`` is the kernel's error number when known."""

    def __init__(self, message: str, *, errno: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno


class SysfsError(HostError):
    """Reading or writing sysfs failed; ``path`` names the file."""

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class ResourceBusyError(HostError):
    """A host resource (tap name, VF, PCI device) is already held by someone else."""


class ProcessError(QctlError):
    """A QEMU process failed: did not start, or exited.

    ``returncode`` is the exit status when known; ``stderr_tail`` the last lines it wrote.
    """

    def __init__(
        self,
        message: str,
        *,
        returncode: int | None = None,
        stderr_tail: str = "",
    ) -> None:
        full = message
        if stderr_tail.strip():
            full = f"{message}: {stderr_tail.strip()}"
        super().__init__(full)
        self.returncode = returncode
        self.stderr_tail = stderr_tail


class StateError(QctlError):
    """A domain's state directory or status file is missing, locked or damaged."""


class JobAbortedError(StateError):
    """A job was aborted on request (``Domain.abort_job``, ``qctl job-abort``), from this
    process or another; what it had done was rolled back."""


class HotplugError(QctlError):
    """Attaching or detaching a device failed.

    ``alias`` names the device and ``stage`` the step that failed (``netdev_add``,
    ``device_add``, ``tap``, …).
    """

    def __init__(self, message: str, *, alias: str | None = None, stage: str | None = None) -> None:
        super().__init__(message)
        self.alias = alias
        self.stage = stage


class MigrationError(QctlError):
    """A live migration was refused before it started, or failed, or was cancelled.

    ``stage`` names the step: ``check`` (a refusal: nothing was changed), ``setup``,
    ``transfer``, ``incoming``, ``cancel``. After a failure the source keeps running.
    """

    def __init__(self, message: str, *, stage: str) -> None:
        super().__init__(message)
        self.stage = stage


class ConsoleError(QctlError):
    """Waiting on the guest's serial console failed.

    ``reason`` is ``"timeout"`` (the pattern did not show in time), ``"failure"`` (the failure
    pattern showed first; ``failure_line`` is that line) or ``"exited"`` (QEMU exited first).
    ``pattern`` is what was waited for and ``lines`` the last lines the console showed, which
    ``str()`` quotes so a failing test's message says what the guest was doing.
    """

    def __init__(
        self,
        message: str,
        *,
        reason: str,
        pattern: str,
        lines: tuple[str, ...] = (),
        failure_line: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason
        self.pattern = pattern
        self.lines = lines
        self.failure_line = failure_line

    def __str__(self) -> str:
        if not self.lines:
            return f"{self.message} (the console showed nothing)"
        shown = "\n".join(f"  | {line}" for line in self.lines)
        return f"{self.message}; last {len(self.lines)} console lines:\n{shown}"


def add_rollback_note(original: BaseException, failure: BaseException, step: str) -> None:
    """Record on ``original`` that undoing ``step`` failed with ``failure``.

    The original error stays the one the caller sees; the rollback failure is kept as a note
    so it is neither lost nor allowed to hide what went wrong first.
    """
    original.add_note(f"rollback of {step} also failed: {type(failure).__name__}: {failure}")
