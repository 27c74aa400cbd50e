"""Confining QEMU when qctl runs as root, as libvirt does: an unprivileged user, QEMU's
seccomp sandbox, and host files handed over as fds.

- **User.** QEMU drops to the QEMU user (``qctl-qemu`` by default, ``$QCTL_QEMU_USER``, or
  the ``user`` given; ``scripts/bootstrap`` creates it) by its own option: ``-run-with
  user=`` where the probe found it (QEMU 9.1), else ``-runas``. QEMU reads ``<kernel>`` and
  ``<initrd>`` and opens ``/dev/kvm`` while still root, before it drops privileges.
- **Sandbox.** ``-sandbox on,obsolete=deny,elevateprivileges=allow,spawn=deny,
  resourcecontrol=deny`` where the probe found ``-sandbox`` (QEMU built with libseccomp).
  ``elevateprivileges`` must allow set*id: QEMU installs the filter before it drops to
  the QEMU user, and a denied ``setuid`` kills it (LXD does the same). After the drop QEMU
  has no capabilities and ``no_new_privs``, so set*id cannot raise its privileges again.
- **Files.** A file the XML names for QEMU to write after start-up (a ``<serial
  type='file'>`` log) is opened by qctl and passed in an fd set (``-add-fd`` with
  ``/dev/fdset/N`` as the path, as libvirt does), so QEMU opens nothing it was not given
  and the QEMU user needs no right on the user's paths.
- **VFIO.** A group device (``/dev/vfio/N``) is handed to the QEMU user before QEMU opens
  it, and back to root when the device is released (:func:`take_back_vfio_group`).

``confine=False`` (``qctl start --no-confine``) runs QEMU as qctl's own user, unsandboxed;
a non-root qctl never confines (QEMU already runs as that user).

:func:`confinement_for` decides, :func:`confine_args` and :func:`file_args` are pure (they
feed the command-line builder), :func:`open_files` and :func:`hand_vfio_group` act on the
host with their undo on the caller's stack.
"""

from __future__ import annotations

import contextlib
import os
import pwd
from collections.abc import Mapping
from pathlib import Path

from qctl.caps import Capability, QEMUCaps
from qctl.conf import DomainDef, SerialType
from qctl.errors import HostError, UnsupportedError
from qctl.record import record

__all__ = [
    "DEFAULT_QEMU_USER",
    "SANDBOX",
    "VFIO_DIR",
    "Confinement",
    "PassedFile",
    "confine_args",
    "confinement_for",
    "file_args",
    "hand_vfio_group",
    "open_files",
    "passed_paths",
    "take_back_vfio_group",
]

DEFAULT_QEMU_USER = "qctl-qemu"
"""The user QEMU runs as when confined, unless ``$QCTL_QEMU_USER`` or the caller names one."""

SANDBOX = "on,obsolete=deny,elevateprivileges=allow,spawn=deny,resourcecontrol=deny"
"""QEMU's seccomp policy (see the module for why set*id is allowed)."""

VFIO_DIR = "/dev/vfio"
"""Where VFIO group devices live."""

#: where undo steps go (both kinds of exit stack have ``callback``)
_Stack = contextlib.ExitStack | contextlib.AsyncExitStack

#: fd sets of passed files are numbered from here (QEMU's own start at 0)
_FIRST_FDSET = 1


@record
class Confinement:
    """How QEMU is confined: the user it drops to (name, uid, gid), how, and the sandbox."""

    user: str
    uid: int
    gid: int
    run_with: bool = False
    sandbox: bool = False


@record
class PassedFile:
    """A file qctl opened for QEMU: its fd (a number, or a name in a dry run) and fd set."""

    fd: str
    fdset: int

    @property
    def qemu_path(self) -> str:
        """The path QEMU opens instead of the file's own."""
        return f"/dev/fdset/{self.fdset}"


def confinement_for(
    caps: QEMUCaps, *, confine: bool | None = None, user: str | None = None
) -> Confinement | None:
    """How to confine QEMU: None when ``confine`` is False, or unset and qctl is not root.

    :class:`UnsupportedError` for ``confine=True`` without root; :class:`HostError` when the
    QEMU user does not exist.
    """
    root = os.geteuid() == 0
    if confine is False or (confine is None and not root):
        return None
    if not root:
        raise UnsupportedError("confining QEMU needs root: run qctl as root or --no-confine")
    name = user or os.environ.get("QCTL_QEMU_USER") or DEFAULT_QEMU_USER
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise HostError(
            f"the QEMU user {name!r} does not exist: create it (scripts/bootstrap makes "
            f"{DEFAULT_QEMU_USER}) or start with --no-confine"
        ) from None
    return Confinement(
        user=name,
        uid=entry.pw_uid,
        gid=entry.pw_gid,
        run_with=caps.has(Capability.RUN_WITH_USER),
        sandbox=caps.has(Capability.SECCOMP_SANDBOX),
    )


def confine_args(confinement: Confinement | None) -> list[str]:
    """The options that drop QEMU's privileges and turn its sandbox on (none unconfined)."""
    if confinement is None:
        return []
    args = (
        ["-run-with", f"user={confinement.user}"]
        if confinement.run_with
        else ["-runas", confinement.user]
    )
    if confinement.sandbox:
        args += ["-sandbox", SANDBOX]
    return args


def passed_paths(domain: DomainDef) -> list[str]:
    """The files of ``domain`` QEMU would open after start-up, which qctl opens instead."""
    return [
        serial.source_path
        for serial in domain.serials
        if serial.type is SerialType.FILE and serial.source_path is not None
    ]


def file_args(files: Mapping[str, PassedFile]) -> list[str]:
    """``-add-fd`` for every passed file (its path is then ``/dev/fdset/N``)."""
    args: list[str] = []
    for passed in files.values():
        args += ["-add-fd", f"fd={passed.fd},set={passed.fdset}"]
    return args


def open_files(domain: DomainDef, stack: _Stack) -> dict[str, PassedFile]:
    """Open every file QEMU would write after start-up (truncated, as QEMU would), their
    closing on ``stack``; by the path the XML names."""
    files: dict[str, PassedFile] = {}
    for number, path in enumerate(passed_paths(domain), _FIRST_FDSET):
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOCTTY
        try:
            fd = os.open(path, flags, 0o600)
        except OSError as exc:
            raise HostError(f"cannot open {path} for QEMU: {exc.strerror}") from exc
        stack.callback(os.close, fd)
        files[path] = PassedFile(str(fd), number)
    return files


def hand_vfio_group(
    group: int, confinement: Confinement, stack: _Stack, *, vfio_dir: str = VFIO_DIR
) -> None:
    """Give ``vfio_dir/group`` to the QEMU user so QEMU can open it; handed back on ``stack``
    (and by :func:`take_back_vfio_group` when the device is released)."""
    path = Path(vfio_dir) / str(group)
    try:
        os.chown(path, confinement.uid, confinement.gid, follow_symlinks=False)
    except FileNotFoundError:  # not bound to vfio-pci: QEMU's own error will say so
        return
    except OSError as exc:
        raise HostError(f"cannot give {path} to {confinement.user}: {exc.strerror}") from exc
    stack.callback(take_back_vfio_group, group, vfio_dir=vfio_dir)


def take_back_vfio_group(group: int, *, vfio_dir: str = VFIO_DIR) -> None:
    """Give ``vfio_dir/group`` back to root (its owner before QEMU had it); a group device
    that is gone (its device left vfio-pci) needs nothing."""
    with contextlib.suppress(FileNotFoundError):
        os.chown(Path(vfio_dir) / str(group), 0, 0, follow_symlinks=False)
