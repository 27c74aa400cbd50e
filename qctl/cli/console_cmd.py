"""``qctl console NAME``: the guest's serial console on this terminal (Ctrl-] leaves);
``qctl console NAME --log [--follow]``: what the guest wrote, and what it writes next.

The terminal is put in raw mode while attached (keys go to the guest as typed, Ctrl-C
included) and restored on leaving, however that happens. Output comes from the console's
log, so attaching never takes anything from another reader, and ``--log --follow`` works
while a test or another terminal holds the console.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import termios
import tty
from collections.abc import Iterator

import qctl

ESCAPE = b"\x1d"  # Ctrl-]


def run(args: argparse.Namespace) -> int:
    """Attach, or print the log."""
    if args.follow and not args.log:
        print("qctl: --follow goes with --log", file=sys.stderr)
        return 2  # a usage error, as argparse reports one
    console = qctl.Console.named(args.name, state_root=args.state_dir)
    if args.log:
        return asyncio.run(_print_log(console, follow=args.follow))
    return asyncio.run(_attach(console, args.name))


async def _print_log(console: qctl.Console, *, follow: bool) -> int:
    async with console:
        if not follow:
            sys.stdout.buffer.write(console.written())
            sys.stdout.flush()
            return 0
        while data := await console.read_bytes():
            sys.stdout.buffer.write(data)
            sys.stdout.flush()
    return 0


@contextlib.contextmanager
def _raw(fd: int) -> Iterator[None]:
    """The terminal on ``fd`` in raw mode (nothing happens when it is not a terminal)."""
    if not os.isatty(fd):
        yield
        return
    saved = termios.tcgetattr(fd)
    tty.setraw(fd)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


async def _attach(console: qctl.Console, name: str) -> int:
    stdin, stdout = sys.stdin.fileno(), sys.stdout.fileno()
    loop = asyncio.get_running_loop()
    keys: asyncio.Queue[bytes] = asyncio.Queue()

    def on_key() -> None:
        data = os.read(stdin, 1024)
        keys.put_nowait(data)
        if not data:  # end of input: b'' ends type_in()
            loop.remove_reader(stdin)

    loop.add_reader(stdin, on_key)
    os.write(stdout, f"Connected to domain {name}\r\nEscape character is ^]\r\n".encode())
    reader = console.reader(from_end=True)

    async def show() -> None:
        while data := await reader.read_bytes():
            os.write(stdout, data)
        os.write(stdout, f"\r\nQEMU of domain {name} exited\r\n".encode())

    async def type_in() -> None:
        while data := await keys.get():
            head, escape, _ = data.partition(ESCAPE)
            if head:
                await console.send(head)
            if escape:
                return

    try:
        async with console, asyncio.TaskGroup() as group:
            with _raw(stdin):
                tasks = [group.create_task(show()), group.create_task(type_in())]
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                for task in tasks:
                    task.cancel()
    finally:
        loop.remove_reader(stdin)
    os.write(stdout, b"\r\n")
    return 0
