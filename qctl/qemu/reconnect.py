"""Taking over a running domain from its status file alone (``Domain.connect``).

Nothing here waits for another process's job: the status file is read as it is (it is only
ever replaced whole), and a free monitor is taken. Only a QEMU found gone needs the
domain's lock, to release what its ledger held and remove the state.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools

from qctl.errors import StateError
from qctl.host import LinkControl
from qctl.qemu.hostpaths import HostPaths
from qctl.qemu.network import NetworkStore
from qctl.qemu.orphan import cut_short, reap_cut_start
from qctl.qemu.process import Launcher, ProcessIdentity, QEMUProcess
from qctl.qemu.release import release_all
from qctl.qemu.runtime import DomainRuntime
from qctl.qemu.startup import connect_free_monitor
from qctl.qemu.state import DomainDir, StateRoot
from qctl.qemu.status import read_stored_status, status_stamp
from qctl.qemu.txn import take_lock, to_the_end
from qctl.qmp import QMPClient

__all__ = ["open_runtime"]

#: how long a QEMU whose monitor refuses connections may take to finish exiting
_EXIT_GRACE = 2.0
#: seconds a connect waits for QEMU to be asked before it reads the books anyway
_ASK_FIRST = 0.05


async def open_runtime(
    name: str,
    root: StateRoot,
    *,
    netlink: LinkControl | None,
    host_paths: HostPaths,
    launcher: Launcher,
) -> DomainRuntime:
    """The runtime of the running domain ``name`` (its tasks not started yet).

    If QEMU is gone, what the ledger holds is released, the state removed, and
    :class:`StateError` raised.
    """
    directory = root.domain(name)
    connecting: asyncio.Task[QMPClient] | None = None
    try:
        try:
            with directory.opened():  # ours (checked) before anything in it is used
                pass
            # QEMU is asked first, and the books read while it answers: connecting is
            # mostly waiting for its greeting and replies, reading is all CPU. The books
            # are read once the handshake is on its way (or the connect is over), not
            # before: reading first would hold the loop while the greeting waits. A
            # monitor slow to greet (every one busy, QEMU hung) is not waited for longer
            # than _ASK_FIRST: an error the books give comes at once.
            sent: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            connecting = asyncio.create_task(
                connect_free_monitor(directory, sent=sent), name=f"connect {name}"
            )
            connecting.add_done_callback(functools.partial(_settle, sent))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_ASK_FIRST):
                    await sent
            # The stamp before the read: a write in between makes the books look older
            # than they are (re-read at the first job), never newer (which would keep
            # them stale).
            stamp = status_stamp(directory)
            status = read_stored_status(directory)  # the definitions are parsed when needed
        except StateError:
            if cut_short(directory):
                await _reap(directory)
            raise
        process = launcher.adopt(status.identity, directory.log_file)
        client = await _connect_unless_exiting(connecting, process)
    except BaseException:
        if connecting is not None:
            await _abandon(connecting)
        raise
    if client is None:
        await _release_dead(directory, status.identity, root, netlink, host_paths)
    assert client is not None
    try:
        return DomainRuntime(
            status=status,
            directory=directory,
            process=process,
            client=client,
            root=root,
            netlink=netlink,
            host_paths=host_paths,
            stamp=stamp,
        )
    except BaseException:
        await client.aclose()
        raise


async def _reap(directory: DomainDir) -> None:
    """End what a ``start`` (or a removal) cut short left, and say so (raises). Returns
    when the lock is held (a live start has it, or another command ends what was left) or,
    under the lock, there was nothing after all: a connect never waits for another
    process."""
    lock = directory.try_lock()
    if lock is None:
        return
    try:
        reaped = await reap_cut_start(directory)
    finally:
        lock.release()
    if reaped:
        raise StateError(
            f"domain {directory.name!r} is not running: its start (or the removal of its "
            "state) was cut short, and what it had left (a QEMU, if one was spawned) was "
            "ended and removed"
        )


async def _release_dead(
    directory: DomainDir,
    identity: ProcessIdentity,
    root: StateRoot,
    netlink: LinkControl | None,
    host_paths: HostPaths,
) -> None:
    """Release what the dead QEMU ``identity``'s ledger held and remove its state; always
    raises. Under the lock the books are read again: another process may have released
    them meanwhile, and a new start of the name written its own (left alone)."""
    name = directory.name
    lock = await take_lock(directory)
    try:
        try:
            stored = read_stored_status(directory)  # (the ledger: no XML is parsed)
        except StateError as exc:
            if directory.status_file.exists():  # damaged: what it holds cannot be known
                raise StateError(
                    f"domain {name!r} is not running (QEMU exited) and its status file "
                    f"cannot be read, so nothing it held was released: {exc}"
                ) from exc
            directory.remove()  # released meanwhile by another process
            raise StateError(f"domain {name!r} is not running") from None
        if stored.identity != identity:
            raise StateError(
                f"the QEMU of domain {name!r} exited, and the name was started again "
                "meanwhile: connect again"
            )
        ledger = stored.ledger
        failures = await release_all(
            ledger,
            domain=name,
            netlink=netlink,
            sysfs=host_paths.sysfs,
            networks=NetworkStore.for_host(root, host_paths.sysfs),
        )
        if failures:
            error = StateError(
                f"domain {name!r} is not running (QEMU exited); some of its "
                f"resources could not be released: {failures[0]}"
            )
            for failure in failures[1:]:
                error.add_note(str(failure))
            raise error
        directory.remove()
    finally:
        lock.release()
    raise StateError(f"domain {name!r} is not running (QEMU exited); its resources were released")


def _settle(sent: asyncio.Future[None], _: object) -> None:
    """A connect that ended (done, failed or cancelled) before its handshake was sent."""
    if not sent.done():
        sent.set_result(None)


async def _abandon(connecting: asyncio.Task[QMPClient]) -> None:
    """Stop a connect no longer wanted and close what it made (its failure is no news), to
    the end even when cancelled meanwhile (which is raised after)."""
    connecting.cancel()
    await to_the_end(_close_when_over(connecting))


async def _close_when_over(connecting: asyncio.Task[QMPClient]) -> None:
    await asyncio.wait([connecting])
    if not connecting.cancelled() and connecting.exception() is None:
        await connecting.result().aclose()


async def _connect_unless_exiting(
    connecting: asyncio.Task[QMPClient], process: QEMUProcess
) -> QMPClient | None:
    """The monitor connection ``connecting`` makes to a running QEMU, or None when QEMU has
    exited.

    A monitor that answers is proof enough that QEMU runs; only a failure asks after the
    process. A QEMU being killed closes its sockets before it turns into a zombie: a refused
    connection gives it a moment to finish exiting before it counts as unreachable.
    """
    try:
        return await connecting
    except StateError:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_EXIT_GRACE):
                await process.wait()
        if process.alive():
            raise
        return None
