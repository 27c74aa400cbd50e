"""Passing file descriptors to a real QEMU (getfd/closefd, add-fd/remove-fd), and quit."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator

import pytest

from qctl.errors import QMPCommandError
from qctl.qmp import connect_qmp

pytestmark = pytest.mark.qemu

Qemu = tuple[asyncio.subprocess.Process, str]


def held_inodes(pid: int) -> set[str]:
    """What the process's fds point at (``pipe:[123]``, paths, …)."""
    held = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            held.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except FileNotFoundError:
            continue
    return held


def pipe_name(fd: int) -> str:
    return os.readlink(f"/proc/self/fd/{fd}")


@pytest.fixture
def pipes() -> Iterator[list[tuple[int, int]]]:
    made: list[tuple[int, int]] = []
    yield made
    for pair in made:
        for fd in pair:
            os.close(fd)


def new_pipe(pipes: list[tuple[int, int]]) -> tuple[int, int]:
    pair = os.pipe()
    pipes.append(pair)
    return pair


async def test_send_fd_gives_qemu_a_copy_and_close_fd_releases_it(
    qemu: Qemu, pipes: list[tuple[int, int]]
) -> None:
    proc, path = qemu
    read_end, _ = new_pipe(pipes)
    async with connect_qmp(path) as client:
        await client.send_fd("pipe0", read_end)
        assert pipe_name(read_end) in held_inodes(proc.pid)
        await client.close_fd("pipe0")
        assert pipe_name(read_end) not in held_inodes(proc.pid)


async def test_concurrent_send_fd_keeps_each_name_with_its_fd(
    qemu: Qemu, pipes: list[tuple[int, int]]
) -> None:
    proc, path = qemu
    first, _ = new_pipe(pipes)
    second, _ = new_pipe(pipes)
    async with connect_qmp(path) as client:
        await asyncio.gather(client.send_fd("first", first), client.send_fd("second", second))
        await client.close_fd("first")
        held = held_inodes(proc.pid)
        assert pipe_name(first) not in held
        assert pipe_name(second) in held


async def test_close_fd_of_an_unknown_name_is_qemus_error(qemu: Qemu) -> None:
    _, path = qemu
    async with connect_qmp(path) as client:
        with pytest.raises(QMPCommandError) as info:
            await client.close_fd("never-sent")
    assert info.value.error_class == "GenericError"
    assert "never-sent" in info.value.desc


async def test_add_fd_puts_a_copy_in_an_fd_set_and_remove_fd_takes_it_out(
    qemu: Qemu, pipes: list[tuple[int, int]]
) -> None:
    proc, path = qemu
    _, write_end = new_pipe(pipes)
    async with connect_qmp(path) as client:
        await client.execute("cont")  # a paused QEMU defers closing removed fds
        added = await client.add_fd(write_end, opaque="tap0")
        assert pipe_name(write_end) in held_inodes(proc.pid)
        again = await client.add_fd(write_end, fdset_id=added.fdset_id)
        assert again.fdset_id == added.fdset_id and again.fd != added.fd
        assert await client.execute("query-fdsets") == [
            {
                "fdset-id": added.fdset_id,
                "fds": [{"fd": added.fd, "opaque": "tap0"}, {"fd": again.fd}],
            }
        ]
        await client.remove_fd(added.fdset_id, added.fd)
        assert await client.execute("query-fdsets") == [
            {"fdset-id": added.fdset_id, "fds": [{"fd": again.fd}]}
        ]
        await client.remove_fd(added.fdset_id)
        assert await client.execute("query-fdsets") == []
        assert pipe_name(write_end) not in held_inodes(proc.pid)


async def test_quit_ends_qemu_and_the_connection_cleanly(qemu: Qemu) -> None:
    proc, path = qemu
    async with connect_qmp(path) as client:
        await client.quit()
        assert not client.connected
    assert await proc.wait() == 0
