"""Monitor: the run state comes from the answer the handshake brought while it is current,
else from QEMU."""

from __future__ import annotations

import os
from typing import Any

from fakeqmp import FakeQMPServer

from qctl.qemu.monitor import Monitor
from qctl.qmp import connect_qmp


async def test_status_takes_the_handshake_answer_once_then_asks(sockdir: str) -> None:
    states = iter(["paused", "running"])

    async def status(arguments: dict[str, Any]) -> dict[str, Any]:
        return {"return": {"status": next(states), "running": False}}

    async with FakeQMPServer(os.path.join(sockdir, "qmp.sock")) as server:
        server.handlers["query-status"] = status
        async with connect_qmp(server.path, ask="query-status", timeout=5) as client:
            monitor = Monitor(client)
            assert await monitor.status() == "paused"  # asked with the handshake
            assert [c for c, _ in server.received].count("query-status") == 1
            assert await monitor.status() == "running"  # asked now
        assert [c for c, _ in server.received].count("query-status") == 2


async def test_status_asks_when_nothing_was_asked_with_the_handshake(sockdir: str) -> None:
    async def status(arguments: dict[str, Any]) -> dict[str, Any]:
        return {"return": {"status": "running", "running": True}}

    async with FakeQMPServer(os.path.join(sockdir, "qmp.sock")) as server:
        server.handlers["query-status"] = status
        async with connect_qmp(server.path, timeout=5) as client:
            assert await Monitor(client).status() == "running"
        assert [c for c, _ in server.received] == ["qmp_capabilities", "query-status"]
