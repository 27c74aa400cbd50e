"""Reading a configuration document, bounded: no input larger than :data:`MAX_DOCUMENT_BYTES`.

Every way a document comes in (a file, ``-`` for standard input, a string or bytes handed to
:func:`~qctl.conf.read_xml`) is measured before anything parses it, so a huge document costs
a refusal, not minutes and gigabytes. Files and stdin are read only up to one byte past the
limit.
"""

from __future__ import annotations

import os
import sys

from qctl.errors import ConfigError

__all__ = ["MAX_DOCUMENT_BYTES", "check_size", "read_document"]

MAX_DOCUMENT_BYTES = 10 * 1024 * 1024
"""The largest configuration document qctl reads: 10 MiB (a domain XML is a few KiB)."""

STDIN = "-"
"""The path that means standard input."""


def _too_large(source: str | None) -> ConfigError:
    return ConfigError(
        f"the document is larger than the {MAX_DOCUMENT_BYTES // (1024 * 1024)} MiB limit",
        source=source,
    )


def check_size(data: str | bytes, source: str | None) -> None:
    """Refuse ``data`` larger than the limit (a string is measured in UTF-8 bytes, at least
    one per character, so a string over the limit in characters is refused unencoded)."""
    size = len(data) if isinstance(data, bytes) or len(data) > MAX_DOCUMENT_BYTES else len(
        data.encode("utf-8", "surrogatepass")
    )
    if size > MAX_DOCUMENT_BYTES:
        raise _too_large(source)


def read_document(path: str | os.PathLike[str]) -> bytes:
    """The bytes of the document at ``path`` (``-``: standard input), at most the limit.

    Anything that cannot be read (missing, a directory, no permission) is a
    :class:`ConfigError` naming the file.
    """
    source = os.fspath(path)
    try:
        if source == STDIN:
            data = sys.stdin.buffer.read(MAX_DOCUMENT_BYTES + 1)
        else:
            with open(source, "rb") as handle:
                data = handle.read(MAX_DOCUMENT_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror or exc}", source=source) from exc
    if len(data) > MAX_DOCUMENT_BYTES:
        raise _too_large(source)
    return data
