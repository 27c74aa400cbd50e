"""Run qctl as installed with its lowest dependency versions (``scripts/check-min-versions``).

Prints the versions under test, then checks, each in the way a user would reach it:

- ``import qctl`` imports neither pyroute2 nor qemu.qmp;
- ``qctl validate EXAMPLE`` (the installed command) exits 0, and ``qctl completion zsh``
  prints shell code (argcomplete);
- the Python API on a domain paused over the monitor: start it, hot-plug an ethernet NIC
  (a tap), see it in the live XML and ledger, unplug it (pending: a paused guest cannot
  answer), stop it; then rtnetlink through pyroute2 says the tap is gone.

Exits non-zero, naming the step, when one fails.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import os
import subprocess
import sys
import tempfile
from pathlib import Path

DOMAIN = """<domain type='qemu'>
  <name>minver</name>
  <memory unit='MiB'>64</memory>
  <os><type arch='x86_64' machine='q35'>hvm</type></os>
  <devices>
    <controller type='pci' index='1' model='pcie-root-port'/>
  </devices>
</domain>"""


def step(what: str, ok: bool) -> None:
    print(f"min-versions: {what}: {'ok' if ok else 'FAILED'}", flush=True)
    if not ok:
        sys.exit(1)


async def paused_domain(state: str) -> None:
    import qctl

    tap = None
    async with qctl.Domain.start(qctl.parse_domain(DOMAIN), state_root=state) as dom:
        try:
            await qctl.monitor_command(dom, "stop")
            status = await qctl.monitor_command(dom, "query-status")
            step("domain paused", status["status"] == "paused")
            nic = await dom.attach_device(
                "<interface type='ethernet'><model type='virtio'/><alias name='ua-min'/>"
                "</interface>"
            )
            step("NIC attached with a tap", nic.target_dev is not None and "ua-min" in dom.xml())
            tap = nic.target_dev
            step("ledger records it", [e.alias for e in dom.ledger] == ["ua-min"])
            result = await dom.detach_device("ua-min", wait=0.2)
            step("detach answered", result in tuple(qctl.DetachResult))
        finally:
            await dom.stop(force=True)
    # rtnetlink through pyroute2 (the tap above was made with ioctls): the tap is gone now
    # that QEMU has exited, as netlink tells.
    from qctl.host import Netlink

    async with Netlink() as netlink:
        step("netlink (pyroute2) sees lo", await netlink.link_exists("lo"))
        step("and no tap left", not await netlink.link_exists(str(tap)))


def main() -> None:
    example = sys.argv[1]
    for dist in ("qctl", "lxml", "pyroute2", "qemu.qmp", "argcomplete", "tqdm"):
        print(f"min-versions: {dist} {importlib.metadata.version(dist)}")
    import qctl  # noqa: F401 - the import is the check

    step("import qctl loads no pyroute2/qemu.qmp", not {"pyroute2", "qemu.qmp"} & set(sys.modules))
    bin_dir = Path(sys.executable).parent
    validate = subprocess.run([bin_dir / "qctl", "validate", example], check=False)
    step("qctl validate", validate.returncode == 0)
    zsh = subprocess.run(
        [bin_dir / "qctl", "completion", "zsh"], capture_output=True, text=True, check=False
    )
    step("qctl completion zsh", zsh.returncode == 0 and "qctl" in zsh.stdout)
    from tqdm import tqdm  # migrate's progress bar, as qctl.cli.migrate_cmd draws it

    bar = tqdm(total=4, unit="MiB", file=open(os.devnull, "w"))  # noqa: SIM115
    bar.n = 2
    bar.set_description("active (pass 1)")
    bar.close()
    step("tqdm draws migrate's bar", bar.n == 2)
    with tempfile.TemporaryDirectory() as state:
        asyncio.run(paused_domain(state))


if __name__ == "__main__":
    main()
