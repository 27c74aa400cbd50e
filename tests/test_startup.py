"""What start-up costs: ``import qctl`` and ``qctl --help`` import no foreign library, and a
verb imports only what it uses (measured in seconds by ``scripts/bench cli``).

Each check runs in a fresh interpreter, so modules other tests imported do not count.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from support import REPO_ROOT

HEAVY = ("pyroute2", "qemu.qmp", "lxml", "asyncio", "argcomplete")


def loaded_after(code: str) -> set[str]:
    """Which of ``HEAVY`` a fresh interpreter has imported after running ``code``."""
    report = f"print(json.dumps(sorted(set(sys.modules) & {set(HEAVY)!r})))"
    probe = f"{code}\nimport json, sys\n{report}"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    return set(json.loads(out.splitlines()[-1]))


def test_import_qctl_loads_no_foreign_library() -> None:
    assert loaded_after("import qctl") == set()


def test_the_parser_and_help_load_no_foreign_library() -> None:
    code = (
        "import contextlib, io\n"
        "from qctl.cli.main import main\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "    main(['--help'])"
    )
    assert loaded_after(code) == set()


def test_validate_loads_lxml_and_nothing_else() -> None:
    example = REPO_ROOT / "examples" / "domain-basic.xml"
    code = f"from qctl.cli.main import main\nassert main(['validate', {str(example)!r}]) == 0"
    assert loaded_after(code) == {"lxml"}


def test_a_domain_loads_pyroute2_only_when_it_touches_a_link() -> None:
    code = "import qctl\nqctl.Domain.list('/nonexistent')"
    assert "pyroute2" not in loaded_after(code)


def test_a_link_that_is_gone_costs_no_pyroute2() -> None:
    """A detach's last step asks for a tap QEMU has closed: the answer ("gone") comes from an
    ioctl, so the detach does not pay pyroute2's import (about 180 ms)."""
    code = (
        "import asyncio\n"
        "from qctl.host import Netlink, delete_tap\n"
        "async def ask():\n"
        "    async with Netlink() as netlink:\n"
        "        assert await netlink.get_link('qctl-gone0') is None\n"
        "        assert await netlink.link_index('qctl-gone0') is None\n"
        "        assert not await delete_tap('qctl-gone0', netlink=netlink, index=7)\n"
        "asyncio.run(ask())"
    )
    assert "pyroute2" not in loaded_after(code)
    # ... while a link that is there is still read through netlink.
    assert "pyroute2" in loaded_after(code.replace("qctl-gone0', netlink", "lo', netlink"))


@pytest.mark.parametrize("name", ["Domain", "CapsCache", "parse_domain", "monitor_command"])
def test_a_public_name_loads_on_first_use(name: str) -> None:
    code = f"import qctl\nassert qctl.{name} is getattr(qctl, {name!r})"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_an_unknown_name_is_an_attribute_error() -> None:
    import qctl

    with pytest.raises(AttributeError, match="no attribute 'nosuch'"):
        qctl.nosuch  # noqa: B018
