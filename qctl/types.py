"""Value objects shared by every layer: MAC and PCI addresses, interface names.

Each validates when built (``parse``) and raises :class:`ValueError` with a short reason;
callers that know where the value came from (a file and line) wrap that into their own
error. Standard library only.
"""

from __future__ import annotations

import re
from typing import ClassVar

from qctl.record import record

__all__ = ["OBJECT_NAME_RULE", "IfName", "MACAddress", "PCIAddress", "is_object_name"]

_MAC_RE = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")

_OBJECT_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}")

OBJECT_NAME_RULE = "a letter or digit, then letters, digits, '_', '.', '+', '-'; at most 64"
"""What :func:`is_object_name` accepts, in words for error messages."""


def is_object_name(name: str) -> bool:
    """Whether ``name`` may name a domain or a network pool.

    One rule for ``validate``, ``start`` and the state root: the name becomes a directory or
    file name there, so it must be short, plain and whole (no trailing newline either).
    """
    return _OBJECT_NAME_RE.fullmatch(name) is not None


@record(order=True)
class MACAddress:
    """A unicast Ethernet MAC address, kept as six bytes; ``str()`` is lower-case ``aa:bb:…``."""

    octets: bytes

    def __post_init__(self) -> None:
        if len(self.octets) != 6:
            raise ValueError(f"a MAC address has 6 bytes, not {len(self.octets)}")

    @classmethod
    def parse(cls, text: str) -> MACAddress:
        """Parse ``aa:bb:cc:dd:ee:ff``; refuse malformed text."""
        if not _MAC_RE.match(text):
            raise ValueError(f"malformed MAC address {text!r}")
        return cls(bytes(int(part, 16) for part in text.split(":")))

    @property
    def is_multicast(self) -> bool:
        """True for multicast and broadcast addresses (low bit of the first byte set)."""
        return bool(self.octets[0] & 0x01)

    def with_first_byte(self, value: int) -> MACAddress:
        """The same address with its first byte replaced (taps use ``0xFE``, like libvirt)."""
        return MACAddress(bytes([value]) + self.octets[1:])

    def __str__(self) -> str:
        return ":".join(f"{b:02x}" for b in self.octets)


@record(order=True)
class PCIAddress:
    """A PCI address ``domain:bus:slot.function`` with the limits PCI sets on each part."""

    domain: int = 0
    bus: int = 0
    slot: int = 0
    function: int = 0

    LIMITS: ClassVar[dict[str, int]] = {"domain": 0xFFFF, "bus": 0xFF, "slot": 0x1F, "function": 7}

    def __post_init__(self) -> None:
        for name, limit in self.LIMITS.items():
            value = getattr(self, name)
            if not 0 <= value <= limit:
                raise ValueError(f"PCI {name} {value:#x} is out of range (0 to {limit:#x})")

    @classmethod
    def parse(cls, text: str) -> PCIAddress:
        """Parse ``0000:03:00.1`` or the short ``03:00.1`` form used by sysfs and lspci."""
        match = re.fullmatch(
            r"(?:([0-9a-fA-F]{1,4}):)?([0-9a-fA-F]{1,2}):([0-9a-fA-F]{1,2})\.([0-7])", text
        )
        if not match:
            raise ValueError(f"malformed PCI address {text!r}")
        dom, bus, slot, fn = match.groups()
        return cls(int(dom or "0", 16), int(bus, 16), int(slot, 16), int(fn))

    def __str__(self) -> str:
        return f"{self.domain:04x}:{self.bus:02x}:{self.slot:02x}.{self.function:x}"


_IFNAME_MAX = 15  # IFNAMSIZ - 1


@record(order=True)
class IfName:
    """A Linux network interface name: 1–15 bytes, no ``/``, no whitespace, not ``.``/``..``."""

    name: str

    def __post_init__(self) -> None:
        raw = self.name.encode()
        if not 1 <= len(raw) <= _IFNAME_MAX:
            raise ValueError(f"interface name {self.name!r} must be 1 to {_IFNAME_MAX} bytes")
        if self.name in {".", ".."} or any(c in self.name for c in "/:") or any(
            c.isspace() for c in self.name
        ):
            raise ValueError(f"interface name {self.name!r} has a forbidden character")

    def __str__(self) -> str:
        return self.name
