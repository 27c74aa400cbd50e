"""How the host layer words an OS error number: ``No such device (ENODEV)``.

The text the user reads and the symbolic name they can search for, in one place, so that
netlink, tun and vhost-net failures all read alike.
"""

from __future__ import annotations

import errno
import os

__all__ = ["errno_text"]


def errno_text(code: int | None, reason: str | None = None) -> str:
    """``<reason> (<ERRNO NAME>)``; ``reason`` defaults to the C library's text for ``code``."""
    if code is None:
        return reason or "unknown error"
    name = errno.errorcode.get(code, f"errno {code}")
    return f"{reason or os.strerror(code)} ({name})"
