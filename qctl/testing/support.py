"""What the plugin's fixtures share: skipping for a missing prerequisite, the guest's XML."""

from __future__ import annotations

import os
from pathlib import Path
from typing import NoReturn

import pytest

from qctl.testing.guest import guest_dir, guest_xml

__all__ = ["bundled_guest_xml", "missing"]


def missing(what: str) -> NoReturn:
    """Skip for a missing prerequisite, or fail under CI (``$CI`` set), which must have it."""
    if os.environ.get("CI"):
        pytest.fail(f"{what} (CI is set, so this is a failure, not a skip)")
    pytest.skip(what)


def bundled_guest_xml(config: pytest.Config) -> str:
    """The bundled guest's domain XML, from ``$QCTL_GUEST_DIR``, else the ``qctl_guest_dir``
    ini option, else ``.cache/guest`` under pytest's root directory (where scripts/build-guest
    puts it in a qctl checkout)."""
    configured = str(config.getini("qctl_guest_dir"))
    default = Path(configured) if configured else config.rootpath / ".cache" / "guest"
    try:
        return guest_xml("qctl-guest", directory=guest_dir(default))
    except FileNotFoundError as exc:
        missing(str(exc))
