"""A ``start`` killed after QEMU was spawned leaves nothing that the next command cannot
find and end (real QEMU, paused; no guest needed)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest
from support import processes_naming, unique

from qctl import Domain, StateError, parse_domain
from qctl.host import Netlink

pytestmark = [pytest.mark.qemu]

CHILD = """
import asyncio, os, sys
from qctl import Domain, Launcher, parse_domain

class DieAfterSpawn(Launcher):
    async def spawn(self, argv, **kwargs):
        await super().spawn(argv, **kwargs)
        os._exit(9)  # as kill -9 of `qctl start` right after QEMU was spawned

async def main():
    defn = parse_domain(open(sys.argv[1]).read())
    await Domain.start(defn, state_root=sys.argv[2], launcher=DieAfterSpawn())

asyncio.run(main())
"""


def _domain(name: str, tap: str) -> str:
    return f"""<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>64</memory>
  <os><type arch='x86_64' machine='q35'>hvm</type></os>
  <devices>
    <interface type='ethernet'><mac address='52:54:00:cc:00:01'/><target dev='{tap}'/>
      <model type='virtio'/></interface>
  </devices>
</domain>"""


@pytest.mark.parametrize("then", ["connect", "start"])
async def test_a_start_killed_after_spawning_is_found_and_ended(
    tmp_path: Path, tun: None, netlink: Netlink, then: str
) -> None:
    name, tap = unique("orph"), unique("qorph")
    xml = tmp_path / "domain.xml"
    xml.write_text(_domain(name, tap))
    state = tmp_path / "state"
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD, str(xml), str(state)
    )
    assert await child.wait() == 9
    pidfile = str(state / "domains" / name / "qemu.pid")
    assert processes_naming(pidfile), "the orphan QEMU should be running"
    assert await netlink.get_link(tap) is not None  # it holds the tap
    [info] = Domain.list(state)
    assert info.name == name and "cut short" in (info.error or "")

    if then == "connect":
        with pytest.raises(StateError, match="start was cut short"):
            await Domain.connect(name, state_root=state)
    else:  # a second start of the name ends the orphan, then starts afresh
        dom = await Domain.start(parse_domain(xml.read_text()), state_root=state)
        await dom.stop(force=True)
    for _ in range(100):
        if not processes_naming(pidfile):
            break
        await asyncio.sleep(0.05)
    assert not processes_naming(pidfile)
    assert await netlink.get_link(tap) is None
    assert Domain.list(state) == []
