"""Network pools: ``<network>`` definitions kept in the state root.

``<interface type='network'>`` draws from a pool by name: a bridge (forward mode bridge)
or a set of host devices (forward mode hostdev). Definitions are stored as XML files under
``ROOT/networks/NAME.xml``, written atomically, so every qctl process sees the same pools.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

from qctl.conf import NetworkDef, format_xml, parse_network
from qctl.errors import ConfigError, StateError
from qctl.qemu.state import StateRoot, atomic_write

__all__ = ["NetworkStore"]

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$")


class NetworkStore:
    """The pools defined in one state root."""

    def __init__(self, root: StateRoot) -> None:
        self.path = root.path / "networks"

    def _file(self, name: str) -> Path:
        if not _NAME_RE.match(name):
            raise ConfigError(f"network name {name!r} is not usable as a file name")
        return self.path / f"{name}.xml"

    def define(self, network: NetworkDef) -> None:
        """Store ``network``, replacing a pool of the same name."""
        target = self._file(network.name)
        self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        atomic_write(target, format_xml(network).encode(), 0o644)

    def get(self, name: str) -> NetworkDef:
        """The pool called ``name``; StateError when none is defined."""
        path = self._file(name)
        try:
            text = path.read_bytes()
        except FileNotFoundError:
            raise StateError(f"no network named {name!r} is defined (qctl net-define)") from None
        return parse_network(text, source=str(path))

    def names(self) -> list[str]:
        """Names of the defined pools, sorted."""
        if not self.path.is_dir():
            return []
        return sorted(p.stem for p in self.path.glob("*.xml"))

    def undefine(self, name: str) -> None:
        """Forget the pool called ``name`` (no error if absent)."""
        with contextlib.suppress(FileNotFoundError):
            self._file(name).unlink()
