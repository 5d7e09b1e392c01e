"""The write operations of the client API, performed locally on the writer or forwarded.

HTTP resources call `writes.call(name, args)` on every process. On the writer that runs
the operation; elsewhere it goes over the replication HTTP API, and the worker answers its
client only once its own view has reached the positions the write produced.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from homeserver.handlers.accounts import AccountHandler
from homeserver.handlers.event_creation import EventCreationHandler
from homeserver.handlers.rooms import RoomHandler
from replication.http import ReplicationClient
from replication.follower import StreamFollower

logger = logging.getLogger(__name__)

Operation = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


class Writes(Protocol):
    async def call(self, name: str, args: dict[str, Any]) -> dict[str, Any]: ...


def build_write_operations(
    accounts: AccountHandler, rooms: RoomHandler, events: EventCreationHandler
) -> dict[str, Operation]:
    async def register(a: dict[str, Any]) -> dict[str, Any]:
        return await accounts.register(
            a.get("localpart"),
            a.get("password"),
            device_id=a.get("device_id"),
            display_name=a.get("display_name"),
            inhibit_login=bool(a.get("inhibit_login")),
        )

    async def login(a: dict[str, Any]) -> dict[str, Any]:
        return await accounts.login(a["user"], a["password"], a.get("device_id"), a.get("display_name"))

    async def logout(a: dict[str, Any]) -> dict[str, Any]:
        return await accounts.logout(a["token"])

    async def admin_nonce(a: dict[str, Any]) -> dict[str, Any]:
        return {"nonce": accounts.new_nonce()}

    async def admin_register(a: dict[str, Any]) -> dict[str, Any]:
        return await accounts.admin_register(a["body"])

    async def create_room(a: dict[str, Any]) -> dict[str, Any]:
        return await rooms.create_room(a["user_id"], a["body"])

    async def membership(a: dict[str, Any]) -> dict[str, Any]:
        return await rooms.update_membership(
            a["sender"], a["room_id"], a["target"], a["membership"], a.get("reason")
        )

    async def send_event(a: dict[str, Any]) -> dict[str, Any]:
        txn = a.get("txn")
        event_id, _ = await events.send(
            a["room_id"],
            a["sender"],
            a["type"],
            a["content"],
            state_key=a.get("state_key"),
            txn=tuple(txn) if txn else None,  # type: ignore[arg-type]
        )
        return {"event_id": event_id}

    return {
        "register": register,
        "login": login,
        "logout": logout,
        "admin_nonce": admin_nonce,
        "admin_register": admin_register,
        "create_room": create_room,
        "membership": membership,
        "send_event": send_event,
    }


class LocalWrites:
    def __init__(self, operations: Mapping[str, Operation]) -> None:
        self.operations = operations

    async def call(self, name: str, args: dict[str, Any]) -> dict[str, Any]:
        return await self.operations[name](args)


class ForwardedWrites:
    def __init__(
        self,
        client: ReplicationClient,
        followers: Mapping[str, StreamFollower],
        wait_timeout_s: float,
    ) -> None:
        self.client = client
        self.followers = followers
        self.wait_timeout_s = wait_timeout_s

    async def call(self, name: str, args: dict[str, Any]) -> dict[str, Any]:
        result, positions = await self.client.call(name, args)
        for stream, pos in positions.items():
            follower = self.followers.get(stream)
            if follower is None:
                continue
            tracker = follower.tracker
            tracker.saw_writer_position(pos)
            # Don't rely on Redis delivering the position: read up to it now.
            follower.request_catch_up(pos)
            if not await tracker.wait_for(pos, self.wait_timeout_s):
                logger.warning(
                    "replication did not catch up in time after a forwarded write",
                    extra={"stream": stream, "want": pos, "have": tracker.position},
                )
        return result
