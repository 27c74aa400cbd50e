"""The raw monitor: any QMP command, or a human monitor (HMP) line, sent to a running domain.

The escape hatch of ``virsh qemu-monitor-command``: for what qctl has no verb for, and for
looking at QEMU's own view (``query-pci``, ``info network``). The driver does not know what
such a command changes, so nothing here touches the ledger; a command that adds or removes
devices behind qctl's back is found and reconciled by the next :meth:`Domain.connect`.

These are functions taking a :class:`~qctl.qemu.domain.Domain`, not methods of it, so the
handle stays the driver's own vocabulary. They use the domain's monitor connection.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from qctl.errors import ConfigError

if TYPE_CHECKING:
    from qctl.qemu.domain import Domain

__all__ = ["human_monitor_command", "monitor_command", "parse_monitor_command"]

#: how long QEMU may take to answer a raw command (some, like ``query-qmp-schema``, are slow)
RAW_TIMEOUT = 30.0


def parse_monitor_command(text: str) -> tuple[str, dict[str, Any]]:
    """The command name and arguments of ``text``: a QMP message such as
    ``{"execute": "query-status"}`` (``"arguments"`` optional), or a bare command name.

    :class:`ConfigError` says what is wrong with any other text.
    """
    stripped = text.strip()
    if not stripped.startswith("{"):
        if not stripped or any(c.isspace() for c in stripped):
            raise ConfigError(
                f"not a QMP command: {text!r} (give JSON such as "
                '\'{"execute": "query-status"}\', a command name, or --hmp for HMP)'
            )
        return stripped, {}
    try:
        message = json.loads(stripped)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"the QMP command is not valid JSON: {exc}") from None
    if not isinstance(message, dict) or not isinstance(message.get("execute"), str):
        raise ConfigError('the QMP command must be an object with an "execute" string')
    arguments = message.get("arguments", {})
    if not isinstance(arguments, dict):
        raise ConfigError('the QMP command\'s "arguments" must be an object')
    unknown = sorted(set(message) - {"execute", "arguments", "id"})
    if unknown:
        raise ConfigError(f"the QMP command has unknown members: {', '.join(unknown)}")
    return message["execute"], arguments


async def monitor_command(
    dom: Domain, command: str, arguments: Mapping[str, object] | None = None
) -> Any:
    """Run QMP ``command`` on ``dom`` and return QEMU's ``return`` value.

    QEMU's refusal is a :class:`~qctl.errors.QMPCommandError` with its class and text.
    """
    return await dom.monitor.client.execute(command, arguments, timeout=RAW_TIMEOUT)


async def human_monitor_command(dom: Domain, text: str) -> str:
    """Run the HMP line ``text`` (``info network``) on ``dom`` and return its output."""
    reply = await monitor_command(dom, "human-monitor-command", {"command-line": text})
    return str(reply)
