"""Receipts and read markers:

POST /rooms/{roomId}/receipt/{receiptType}/{eventId}   (the `receipts` stream; an
     m.fully_read "receipt" is the read marker, on `account_data`)
POST /rooms/{roomId}/read_markers                      (both)
"""

from __future__ import annotations

from typing import Any

from twisted.web.server import Request

from homeserver.context import HomeServerContext
from homeserver.handlers.account_data import FULLY_READ_TYPE
from homeserver.handlers.receipts import (
    RECEIPT_TYPES,
    ReceiptSyncSource,
    ReceiptWriter,
    require_event_in_room,
    require_joined,
)
from homeserver.handlers.stream_writer import get_stream_writer
from homeserver.handlers.writes import Operation
from homeserver.http.errors import bad_param
from homeserver.http.server import Router, parse_json_object, require_str
from homeserver.sync.sources import register_sync_source
from storage.stores.receipts import ReceiptStore

Result = tuple[int, Any]

WRITE_STREAMS = {"receipt": "receipts"}


def write_operations(ctx: HomeServerContext) -> dict[str, Operation]:
    writer = ReceiptWriter(
        ReceiptStore(ctx.db),
        ctx.event_store,
        get_stream_writer(ctx, "receipts"),
        ctx.notifier,
        ctx.clock_ms,
    )

    async def receipt(a: dict[str, Any]) -> dict[str, Any]:
        await writer.set_receipt(
            a["room_id"], a["user_id"], a["receipt_type"], a["event_id"], a.get("thread_id")
        )
        return {}

    return {"receipt": receipt}


def _check_room_id(room_id: str) -> None:
    if not room_id.startswith("!"):
        raise bad_param("Invalid room ID")


def install(ctx: HomeServerContext, router: Router) -> None:
    async def on_receipt(
        request: Request, room_id: str, receipt_type: str, event_id: str
    ) -> Result:
        requester = await ctx.auth.get_requester(request)
        body = parse_json_object(request, allow_empty=True)
        _check_room_id(room_id)
        if receipt_type not in (*RECEIPT_TYPES, FULLY_READ_TYPE):
            raise bad_param(f"Unknown receipt type {receipt_type!r}")
        thread_id = body.get("thread_id")
        if thread_id is not None:
            if not isinstance(thread_id, str) or not thread_id:
                raise bad_param("thread_id field must be a non-empty string")
            if receipt_type == FULLY_READ_TYPE:
                raise bad_param("thread_id is not allowed for m.fully_read")
        if receipt_type == FULLY_READ_TYPE:
            await ctx.writes.call(
                "set_fully_read",
                {"user_id": requester.user_id, "room_id": room_id, "event_id": event_id},
            )
            return 200, {}
        await ctx.writes.call(
            "receipt",
            {
                "room_id": room_id,
                "user_id": requester.user_id,
                "receipt_type": receipt_type,
                "event_id": event_id,
                "thread_id": thread_id,
            },
        )
        return 200, {}

    async def on_read_markers(request: Request, room_id: str) -> Result:
        requester = await ctx.auth.get_requester(request)
        body = parse_json_object(request)
        _check_room_id(room_id)
        wanted = {
            key: require_str(body, key, optional=True) for key in (FULLY_READ_TYPE, *RECEIPT_TYPES)
        }
        # Check everything before writing anything: a bad request changes nothing.
        if any(wanted.values()):
            await require_joined(ctx.event_store, room_id, requester.user_id)
        for event_id in wanted.values():
            if event_id is not None:
                await require_event_in_room(ctx.event_store, room_id, event_id)
        for receipt_type in RECEIPT_TYPES:
            event_id = wanted[receipt_type]
            if event_id is not None:
                await ctx.writes.call(
                    "receipt",
                    {
                        "room_id": room_id,
                        "user_id": requester.user_id,
                        "receipt_type": receipt_type,
                        "event_id": event_id,
                        "thread_id": None,
                    },
                )
        fully_read = wanted[FULLY_READ_TYPE]
        if fully_read is not None:
            await ctx.writes.call(
                "set_fully_read",
                {"user_id": requester.user_id, "room_id": room_id, "event_id": fully_read},
            )
        return 200, {}

    router.add_client(
        "POST",
        r"/rooms/(?P<room_id>[^/]+)/receipt/(?P<receipt_type>[^/]+)/(?P<event_id>[^/]+)",
        on_receipt,
        "/_matrix/client/v3/rooms/{roomId}/receipt/{receiptType}/{eventId}",
    )
    router.add_client(
        "POST",
        r"/rooms/(?P<room_id>[^/]+)/read_markers",
        on_read_markers,
        "/_matrix/client/v3/rooms/{roomId}/read_markers",
    )
    register_sync_source(ctx, ReceiptSyncSource(ctx))
