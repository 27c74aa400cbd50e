"""The bundled test guest: where it is, a domain that boots it, and a booted one's handle.

The guest (scripts/build-guest: Debian's kernel and a busybox initramfs) prints
``QCTL-GUEST-READY`` on its serial console once up, then a ``QCTL-NICS:`` line listing
``name,driver,mac`` for its interfaces at every change.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Callable
from pathlib import Path

from qctl.errors import ConsoleError
from qctl.qemu.console import RECENT_LINES, Console
from qctl.qemu.domain import Domain
from qctl.qemu.process import log_tail
from qctl.record import record

__all__ = ["BOOT_FAILURE", "NICS", "READY", "Guest", "NICReport", "guest_dir", "guest_xml"]

READY = "QCTL-GUEST-READY"
#: what boots no further: a stop at once is better than a timeout
BOOT_FAILURE = r"Kernel panic"
NICS = re.compile(r"^QCTL-NICS:(.*)$")

#: the guest's interfaces by MAC: (name in the guest, driver)
NICReport = dict[str, tuple[str, str]]


def guest_dir(default: Path | None = None) -> Path:
    """Where scripts/build-guest put the guest: ``$QCTL_GUEST_DIR``, else ``default``, else
    ``.cache/guest`` under the current directory."""
    env = os.environ.get("QCTL_GUEST_DIR")
    if env:
        return Path(env)
    return default if default is not None else Path.cwd() / ".cache" / "guest"


def guest_xml(name: str, devices: str = "", *, directory: Path | None = None) -> str:
    """A TCG q35 domain booting the bundled guest from ``directory`` (see :func:`guest_dir`),
    with its console on a ``<serial type='pty'/>``, two spare root ports for hot-plug, and
    ``devices`` (XML) added. FileNotFoundError when the guest was not built."""
    base = guest_dir(directory)
    kernel = base / "vmlinux" if (base / "vmlinux").is_file() else base / "vmlinuz"
    for path in (kernel, base / "initrd.img"):
        if not path.is_file():
            raise FileNotFoundError(f"no test guest in {base}: run scripts/build-guest ({path})")
    return f"""<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
    <kernel>{kernel}</kernel>
    <initrd>{base / "initrd.img"}</initrd>
    <cmdline>console=ttyS0 quiet panic=-1</cmdline>
  </os>
  <devices>
    <controller type='pci' index='0' model='pcie-root'/>
    <controller type='pci' index='1' model='pcie-root-port'/>
    <controller type='pci' index='2' model='pcie-root-port'/>
    <serial type='pty'/>
{devices}
  </devices>
</domain>
"""


def _parse_nics(text: str) -> NICReport:
    nics: NICReport = {}
    for entry in text.split():
        name, driver, mac = entry.split(",")
        nics[mac] = (name, driver)
    return nics


@record
class Guest:
    """A booted domain and its serial console, as the plugin's fixtures give them."""

    domain: Domain
    console: Console

    async def wait_for_nics(
        self,
        predicate: Callable[[NICReport], bool],
        *,
        timeout: float,  # noqa: ASYNC109 - as Console.wait_for: errors quote the console
    ) -> NICReport:
        """The bundled guest's next interface report ``{mac: (name, driver)}`` for which
        ``predicate`` holds; :class:`~qctl.errors.ConsoleError` after ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            left = deadline - loop.time()
            try:
                match = await self.console.wait_for(NICS, timeout=max(left, 0.0))
            except ConsoleError as exc:
                exc.add_note(f"no NIC report satisfied the test within {timeout:g} s")
                raise
            nics = _parse_nics(match.group(1))
            if predicate(nics):
                return nics

    def report(self) -> list[tuple[str, str]]:
        """Sections for a failed test's report: the console's last lines, QEMU's log."""
        name = self.domain.name
        console = "\n".join(self.console.tail(RECENT_LINES)) or "(nothing)"
        qemu = log_tail(self.domain.process.log_path) or "(empty)"
        return [
            (f"qctl {name}: last {RECENT_LINES} console lines", console),
            (f"qctl {name}: QEMU log", qemu),
        ]
