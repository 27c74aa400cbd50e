"""vhost-net: whether a tap NIC gets in-kernel virtio-net acceleration, and its fds.

QEMU cannot open ``/dev/vhost-net`` itself once sandboxed, so, like libvirt, we open it for
QEMU: one fd per queue, passed with the tap fds (``vhostfd=``/``vhostfds=``). The decision
follows libvirt's ``qemuInterfaceOpenVhostNet`` (src/qemu/qemu_interface.c), in its order:

1. the domain does not run under KVM (TCG): no vhost-net, *whatever the driver name says*;
   libvirt returns before looking at ``<driver name='vhost'/>`` for non-KVM domains;
2. ``<driver name='qemu'/>``: no vhost-net, on request;
3. the NIC model is not virtio: an error if ``name='vhost'`` asked for it ("vhost-net is only
   supported for virtio network interfaces"), else no vhost-net;
4. open the device once per queue: on failure, ``name='vhost'`` is an error ("vhost-net was
   requested … but is unavailable"); without a name we log a warning and go without.

One deliberate difference: when some but not all queues' fds open, libvirt keeps the ones it
got; QEMU then refuses a tap whose ``vhostfds`` count differs from its ``fds`` count, so we
close them and go without vhost-net instead.

The fds are opened close-on-exec: the caller passes them to QEMU explicitly (``pass_fds`` or
``SCM_RIGHTS``) and then closes its copies with :meth:`VhostChoice.close`.
"""

from __future__ import annotations

import logging
import os
from types import TracebackType
from typing import Literal

from qctl.record import record

from ..errors import HostError, UnsupportedError, add_rollback_note
from .oserror import errno_text

__all__ = [
    "VHOST_NET_PATH",
    "VhostChoice",
    "VhostMode",
    "choose_vhost",
    "decide_vhost",
    "open_vhost_net",
]

log = logging.getLogger(__name__)

VHOST_NET_PATH = "/dev/vhost-net"
"""The vhost-net control device."""

VhostMode = Literal["vhost", "qemu"]
"""The interface's ``<driver name=…>``: ``vhost`` requires vhost-net, ``qemu`` refuses it."""


@record(frozen=False)
class VhostChoice:
    """The outcome of :func:`choose_vhost`.

    ``use_vhost`` says whether to pass ``vhost=on`` with ``fds`` (one per queue, ours until
    :meth:`close`); ``reason`` says why, in words fit for a log line.
    """

    use_vhost: bool
    fds: list[int]
    reason: str

    def close(self) -> None:
        """Close our copies of the vhost-net fds (idempotent)."""
        fds, self.fds = self.fds, []
        for fd in fds:
            try:
                os.close(fd)
            except OSError as exc:
                log.warning("closing vhost-net fd %d failed: %s", fd, exc)

    def __enter__(self) -> VhostChoice:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def open_vhost_net(count: int, path: str = VHOST_NET_PATH) -> list[int]:
    """Open ``path`` ``count`` times read-write and close-on-exec; all or nothing.

    Raises :class:`HostError` naming the device and the OS error; fds opened before the
    failure are closed first.
    """
    if count < 1:
        raise ValueError(f"need at least one vhost-net fd, not {count}")
    fds: list[int] = []
    try:
        for _ in range(count):
            fds.append(os.open(path, os.O_RDWR | os.O_CLOEXEC))
    except OSError as exc:
        error = HostError(f"cannot open {path}: {errno_text(exc.errno, exc.strerror)}")
        for fd in fds:
            try:
                os.close(fd)
            except OSError as close_exc:
                add_rollback_note(error, close_exc, f"closing vhost-net fd {fd}")
        raise error from exc
    return fds


def decide_vhost(
    mode: VhostMode | None,
    *,
    accel_is_kvm: bool,
    virtio: bool,
    unavailable: str | None = None,
) -> tuple[bool, str]:
    """The vhost-net decision itself (rules: module docstring), pure: ``(use it, why)``.

    ``unavailable`` is ``None`` when vhost-net can be had, else why not (the open error).
    :func:`choose_vhost` asks first as if it could, opens the device only when the answer is
    yes, and asks again with the error if the open fails; a dry run asks once with what it
    knows of the host.

    Raises :class:`UnsupportedError` (``capability='vhost-net'``) when ``mode`` is ``'vhost'``
    and vhost-net cannot be had for this NIC: the model is not virtio, or it is unavailable.
    """
    if not accel_is_kvm:
        if mode == "vhost":
            log.info("ignoring driver name='vhost': vhost-net is used only with KVM")
        return False, "the domain does not run under KVM"
    if mode == "qemu":
        return False, "disabled by driver name='qemu'"
    if not virtio:
        if mode == "vhost":
            raise UnsupportedError(
                "vhost-net is only supported for virtio network interfaces",
                capability="vhost-net",
            )
        return False, "the NIC model is not virtio"
    if unavailable is not None:
        if mode == "vhost":
            raise UnsupportedError(
                f"vhost-net was requested but is unavailable: {unavailable}",
                capability="vhost-net",
            )
        return False, f"vhost-net is unavailable: {unavailable}"
    return True, "vhost-net is available"


def choose_vhost(
    mode: VhostMode | None,
    *,
    accel_is_kvm: bool,
    virtio: bool,
    queues: int = 1,
    path: str = VHOST_NET_PATH,
) -> VhostChoice:
    """Decide whether a tap NIC uses vhost-net, and open its fds if so (rules: module docstring).

    ``mode`` is the ``<driver name=…>`` of the interface (``None`` when absent), ``virtio``
    whether its model is a virtio-net one, ``queues`` its queue count. The decision is
    :func:`decide_vhost`'s; this adds opening the device.

    Raises :class:`UnsupportedError` (``capability='vhost-net'``) when ``mode`` is ``'vhost'``
    and vhost-net cannot be had for this NIC: the model is not virtio, or the device does not
    open ("vhost-net was requested but is unavailable: …").
    """
    wanted, reason = decide_vhost(mode, accel_is_kvm=accel_is_kvm, virtio=virtio)
    if not wanted:
        return VhostChoice(False, [], reason)
    try:
        fds = open_vhost_net(queues, path)
    except HostError as exc:
        try:
            _, reason = decide_vhost(
                mode, accel_is_kvm=accel_is_kvm, virtio=virtio, unavailable=str(exc)
            )
        except UnsupportedError as error:  # name='vhost' asked for it
            raise error from exc
        log.warning("not using vhost-net: %s", exc)
        return VhostChoice(False, [], reason)
    return VhostChoice(True, fds, f"{path} opened for {queues} queue(s)")
