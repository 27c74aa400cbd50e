"""Every conversation the driver has with QEMU, in one place.

QMP command names and their argument dictionaries are spelled here and nowhere else in the
driver, so a reader finds each thing qctl asks of QEMU in one module. The methods are thin:
they translate between the driver's values and QMP's JSON, and leave policy (ordering,
rollback, timeouts of whole operations) to their callers.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from qctl.errors import QMPCommandError
from qctl.qmp import QMPClient
from qctl.record import record

__all__ = ["MigrationInfo", "Monitor", "is_not_found", "is_unplug_in_progress"]

_NETWORK_LINE = re.compile(r"^[ \\]*([^\s:]+): index=\d+,type=([\w-]+)", re.MULTILINE)


def is_not_found(error: QMPCommandError) -> bool:
    """True when QEMU refused a command because the device or netdev does not exist."""
    return error.error_class == "DeviceNotFound" or "not found" in error.desc.lower()


def is_unplug_in_progress(error: QMPCommandError) -> bool:
    """True when QEMU refused a ``device_del`` because an earlier one still waits for the
    guest (so that earlier request did reach QEMU)."""
    return "already in the process of unplug" in error.desc


class Monitor:
    """The driver's QMP vocabulary over one connected :class:`~qctl.qmp.QMPClient`."""

    def __init__(self, client: QMPClient) -> None:
        self.client = client

    # -- run state ---------------------------------------------------------------------
    async def resume(self) -> None:
        """Start the vCPUs (``cont``)."""
        await self.client.execute("cont")

    async def pause(self) -> None:
        """Stop the vCPUs (``stop``)."""
        await self.client.execute("stop")

    async def status(self) -> str:
        """The run state: ``running``, ``paused``, ``prelaunch``, ``shutdown``, …

        The answer the handshake brought, while it is current
        (:meth:`~qctl.qmp.QMPClient.take_answer`), else QEMU's answer now.
        """
        reply = self.client.take_answer("query-status")
        if reply is None:
            reply = await self.client.execute("query-status")
        return str(reply["status"])

    async def powerdown(self) -> None:
        """Press the ACPI power button (``system_powerdown``)."""
        await self.client.execute("system_powerdown")

    async def guest_drivers_ready(self) -> bool | None:
        """Whether a guest driver has set up any virtio device (DRIVER_OK): a sign the
        guest OS runs and may answer ACPI. None when QEMU cannot say (no virtio device, or
        no ``x-query-virtio``)."""
        try:
            devices = await self.client.execute("x-query-virtio")
        except QMPCommandError:
            return None
        if not devices:
            return None
        for device in devices:
            reply = await self.client.execute("x-query-virtio-status", {"path": device["path"]})
            status = reply.get("status") if isinstance(reply, dict) else None
            if "DRIVER_OK" in str(status) or (isinstance(status, int) and status & 4):
                return True
        return False

    async def quit(self) -> None:
        """Make QEMU exit at once (``quit``); the end of file that follows is expected."""
        await self.client.quit()

    # -- NICs and devices ----------------------------------------------------------------
    async def set_link(self, alias: str, up: bool) -> None:
        """Set the link state the guest sees on NIC ``alias``."""
        await self.client.execute("set_link", {"name": alias, "up": up})

    async def netdev_add(self, props: Mapping[str, object]) -> None:
        """Create a network backend."""
        await self.client.execute("netdev_add", dict(props))

    async def netdev_del(self, netdev_id: str) -> None:
        """Remove a network backend; QEMU closes the fds it holds for it."""
        await self.client.execute("netdev_del", {"id": netdev_id})

    async def device_add(self, props: Mapping[str, object]) -> None:
        """Hot-plug a device."""
        await self.client.execute("device_add", dict(props))

    async def device_del(self, alias: str) -> None:
        """Ask for a device's removal; it is gone only once DEVICE_DELETED arrives."""
        await self.client.execute("device_del", {"id": alias})

    async def send_fd(self, name: str, fd: int) -> None:
        """Pass ``fd`` to QEMU under ``name`` (``getfd``)."""
        await self.client.send_fd(name, fd)

    async def close_fd(self, name: str) -> None:
        """Make QEMU close the fd passed as ``name`` (``closefd``)."""
        await self.client.close_fd(name)

    # -- what QEMU has -----------------------------------------------------------------------
    async def peripherals(self) -> set[str]:
        """Ids of the devices that have one (``qom-list /machine/peripheral``)."""
        reply = await self.client.execute("qom-list", {"path": "/machine/peripheral"})
        return {
            str(item["name"]) for item in reply if str(item.get("type", "")).startswith("child<")
        }

    async def netdevs(self) -> set[str]:
        """Ids of the network backends.

        QMP has no query for them in QEMU 7.2 (``query-netdev`` came later), so this reads
        HMP's ``info network``, whose lines are ``[ \\ ]ID: index=N,type=KIND,…``; NIC
        frontends (``type=nic``) are left out.
        """
        text = await self.client.execute(
            "human-monitor-command", {"command-line": "info network"}
        )
        return {
            match.group(1)
            for match in _NETWORK_LINE.finditer(str(text))
            if match.group(2) != "nic"
        }

    # -- character devices -----------------------------------------------------------------
    async def chardevs(self) -> dict[str, str]:
        """Chardev id → QEMU's ``filename`` for it, e.g. ``pty:/dev/pts/3``
        (``query-chardev``)."""
        reply = await self.client.execute("query-chardev")
        return {str(item["label"]): str(item["filename"]) for item in reply}

    # -- migration -----------------------------------------------------------------------------
    async def migrate_set_capabilities(self, capabilities: Mapping[str, bool]) -> None:
        """Turn migration capabilities on or off (``migrate-set-capabilities``).

        Keys are QAPI ``MigrationCapability`` names (``events``, ``return-path``, …); both
        sides of a migration must be given the same ones before it starts.
        """
        await self.client.execute(
            "migrate-set-capabilities",
            {
                "capabilities": [
                    {"capability": name, "state": state} for name, state in capabilities.items()
                ]
            },
        )

    async def migrate_capabilities(self) -> dict[str, bool]:
        """The migration capabilities and whether each is on (``query-migrate-capabilities``)."""
        reply = await self.client.execute("query-migrate-capabilities")
        return {str(item["capability"]): bool(item["state"]) for item in reply}

    async def migrate_set_parameters(
        self, *, max_bandwidth: int | None = None, downtime_limit_ms: int | None = None
    ) -> None:
        """Set the outgoing migration's bandwidth cap (bytes/s) and the longest pause of the
        guest allowed at switch-over (ms) (``migrate-set-parameters``); ``None`` leaves one as
        it is."""
        params: dict[str, object] = {}
        if max_bandwidth is not None:
            params["max-bandwidth"] = max_bandwidth
        if downtime_limit_ms is not None:
            params["downtime-limit"] = downtime_limit_ms
        if params:
            await self.client.execute("migrate-set-parameters", params)

    async def migrate(self, uri: str) -> None:
        """Start migrating the guest to ``uri`` (``migrate``); it goes on in the background."""
        await self.client.execute("migrate", {"uri": uri})

    async def migrate_incoming(self, uri: str) -> None:
        """Start listening for an incoming migration on ``uri`` (``migrate-incoming``); QEMU
        must have been started with ``-incoming defer``."""
        await self.client.execute("migrate-incoming", {"uri": uri})

    async def migrate_cancel(self) -> None:
        """Cancel the outgoing migration (``migrate_cancel``); the source keeps running."""
        await self.client.execute("migrate_cancel")

    async def query_migrate(self) -> MigrationInfo:
        """Where the migration stands (``query-migrate``)."""
        return MigrationInfo.from_reply(await self.client.execute("query-migrate"))


@record
class MigrationInfo:
    """``query-migrate``'s answer as values; QEMU leaves out what does not apply yet.

    ``status`` is QAPI's ``MigrationStatus`` (``none``, ``setup``, ``wait-unplug``,
    ``active``, ``device``, ``completed``, ``failed``, ``cancelling``, ``cancelled``, …).
    RAM figures are bytes; ``dirty_pages_rate`` pages per second; times milliseconds.
    ``blocked_reasons`` lists what keeps this domain from migrating at all (QEMU 6.0+).
    """

    status: str
    transferred: int = 0
    remaining: int = 0
    total: int = 0
    dirty_sync_count: int = 0
    dirty_pages_rate: int = 0
    mbps: float = 0.0
    expected_downtime_ms: int | None = None
    downtime_ms: int | None = None
    total_time_ms: int | None = None
    setup_time_ms: int | None = None
    error: str | None = None
    blocked_reasons: tuple[str, ...] = ()

    @classmethod
    def from_reply(cls, reply: Mapping[str, Any]) -> MigrationInfo:
        """Build from the ``query-migrate`` reply."""
        ram = reply.get("ram") or {}

        def opt(key: str) -> int | None:
            value = reply.get(key)
            return int(value) if value is not None else None

        return cls(
            status=str(reply.get("status", "none")),
            transferred=int(ram.get("transferred", 0)),
            remaining=int(ram.get("remaining", 0)),
            total=int(ram.get("total", 0)),
            dirty_sync_count=int(ram.get("dirty-sync-count", 0)),
            dirty_pages_rate=int(ram.get("dirty-pages-rate", 0)),
            mbps=float(ram.get("mbps", 0.0)),
            expected_downtime_ms=opt("expected-downtime"),
            downtime_ms=opt("downtime"),
            total_time_ms=opt("total-time"),
            setup_time_ms=opt("setup-time"),
            error=reply.get("error-desc"),
            blocked_reasons=tuple(str(r) for r in reply.get("blocked-reasons", ())),
        )
