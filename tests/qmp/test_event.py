"""Event subscriptions: filtering, bounded queues that drop the oldest, waiting with a
predicate while commands go on, and the end of the stream when the connection closes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from fakeqmp import FakeQMPServer

from qctl.errors import QMPConnectionError
from qctl.qmp import EventSubscription, QMPClient, QMPEvent, connect_qmp


@pytest.fixture
async def client(server: FakeQMPServer) -> AsyncIterator[QMPClient]:
    async with connect_qmp(server.path) as connected:
        yield connected


async def settle(client: QMPClient) -> None:
    """A round trip: every event the server sent before it has been dispatched."""
    await client.execute("echo")


async def test_a_subscription_gets_only_the_events_it_names(
    server: FakeQMPServer, client: QMPClient
) -> None:
    with client.events("DEVICE_DELETED") as deleted, client.events() as everything:
        await server.emit("DEVICE_DELETED", {"device": "net0"})
        await server.emit("STOP")
        await server.emit("DEVICE_DELETED", {"device": "net1"})
        await settle(client)
        assert [(await deleted.get()).data["device"] for _ in range(2)] == ["net0", "net1"]
        assert deleted.pending == 0
        assert [(await everything.get()).name for _ in range(3)] == [
            "DEVICE_DELETED",
            "STOP",
            "DEVICE_DELETED",
        ]


async def test_event_fields(server: FakeQMPServer, client: QMPClient) -> None:
    with client.events() as events:
        await server.emit("RESUME")
        await server.emit("NIC_RX_FILTER_CHANGED", {"name": "net0", "path": "/x"})
        await settle(client)
        resume, changed = await events.get(), await events.get()
    assert resume.name == "RESUME" and dict(resume.data) == {}
    assert isinstance(resume.timestamp, float)
    assert dict(changed.data) == {"name": "net0", "path": "/x"}
    with pytest.raises(TypeError):
        changed.data["name"] = "changed"  # type: ignore[index]


async def test_a_full_queue_drops_the_oldest_and_counts_it(
    server: FakeQMPServer, client: QMPClient
) -> None:
    with client.events("TICK", maxsize=3) as ticks:
        for n in range(5):
            await server.emit("TICK", {"n": n})
        await settle(client)  # an unread, full subscription does not hold up the client
        assert ticks.dropped == 2
        assert [(await ticks.get()).data["n"] for _ in range(3)] == [2, 3, 4]


async def test_wait_for_a_matching_event_while_commands_go_on(
    server: FakeQMPServer, client: QMPClient
) -> None:
    with client.events("DEVICE_DELETED") as deleted:
        waiter = asyncio.create_task(deleted.wait_for(lambda e: e.data.get("device") == "net1"))
        await server.emit("DEVICE_DELETED", {"device": "net0"})
        replies = await asyncio.gather(*(client.execute("echo", {"n": n}) for n in range(5)))
        assert replies == [{"n": n} for n in range(5)]
        assert not waiter.done()
        await server.emit("DEVICE_DELETED", {"device": "net1"})
        event = await waiter
    assert event.data["device"] == "net1"


async def test_subscriptions_end_when_the_connection_ends(
    server: FakeQMPServer, client: QMPClient
) -> None:
    subscription = client.events()

    async def collect() -> list[str]:
        return [event.name async for event in subscription]

    reader = asyncio.create_task(collect())
    await server.emit("STOP")
    await settle(client)
    await server.drop_connections()
    assert await reader == ["STOP"]
    with pytest.raises(QMPConnectionError, match="no more events"):
        await subscription.get()
    with pytest.raises(QMPConnectionError):
        await subscription.wait_for()


async def test_a_subscription_made_after_close_has_ended(server: FakeQMPServer) -> None:
    client = await connect_qmp(server.path)
    await client.aclose()
    with pytest.raises(QMPConnectionError):
        await client.events().get()


async def test_subscribing_before_connecting_sees_the_first_events(
    server: FakeQMPServer,
) -> None:
    client = QMPClient()
    with client.events("STOP") as stops:
        async with client:
            await client.connect(server.path)
            await server.emit("STOP")
            await settle(client)
            assert stops.pending == 1


async def test_closing_a_subscription_wakes_its_reader_and_unsubscribes(
    server: FakeQMPServer, client: QMPClient
) -> None:
    closed = client.events()
    reader = asyncio.create_task(closed.get())
    await asyncio.sleep(0)
    closed.close()
    with pytest.raises(QMPConnectionError, match="subscription closed"):
        await reader
    with client.events() as open_one:
        await server.emit("STOP")
        await settle(client)
        assert (closed.pending, open_one.pending) == (0, 1)


def test_queue_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least one"):
        EventSubscription(None, maxsize=0)


def test_malformed_events_are_not_events() -> None:
    assert QMPEvent.from_message({"data": {}}) is None
    event = QMPEvent.from_message({"event": "X", "data": [1], "timestamp": {"seconds": 1}})
    assert event == QMPEvent("X", {}, None)


async def test_a_cancelled_wait_leaves_the_subscription_usable(
    server: FakeQMPServer, client: QMPClient
) -> None:
    with client.events("X") as events:
        waiter = asyncio.create_task(events.wait_for())
        await asyncio.sleep(0)
        waiter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await waiter
        assert waiter.cancelled()
        await server.emit("X")
        await settle(client)
        assert (await events.get()).name == "X"
