"""PUT /sendToDevice/{eventType}/{txnId} (the `to_device` stream)."""

from __future__ import annotations

from typing import Any

from twisted.web.server import Request

from homeserver.context import HomeServerContext
from homeserver.handlers.stream_writer import get_stream_writer
from homeserver.handlers.to_device import ToDeviceSyncSource, ToDeviceWriter
from homeserver.handlers.writes import Operation
from homeserver.http.errors import bad_type
from homeserver.http.server import Router, parse_json_object, require_object
from homeserver.sync.sources import register_sync_source
from storage.stores.to_device import ToDeviceStore

Result = tuple[int, Any]

WRITE_STREAMS = {"send_to_device": "to_device"}


def write_operations(ctx: HomeServerContext) -> dict[str, Operation]:
    writer = ToDeviceWriter(
        ctx.server_name,
        ToDeviceStore(ctx.db),
        get_stream_writer(ctx, "to_device"),
        ctx.notifier,
        ctx.clock_ms,
    )

    async def send_to_device(a: dict[str, Any]) -> dict[str, Any]:
        await writer.send(a["sender"], a["sender_device"], a["txn_id"], a["type"], a["messages"])
        return {}

    return {"send_to_device": send_to_device}


def install(ctx: HomeServerContext, router: Router) -> None:
    async def on_send(request: Request, event_type: str, txn_id: str) -> Result:
        requester = await ctx.auth.get_requester(request)
        body = parse_json_object(request)
        messages = require_object(body, "messages")
        assert messages is not None
        for user_id, by_device in messages.items():
            if not isinstance(by_device, dict):
                raise bad_type(f"messages[{user_id!r}] must be an object of device IDs")
            for device_id, content in by_device.items():
                if not isinstance(content, dict):
                    raise bad_type(f"messages[{user_id!r}][{device_id!r}] must be an object")
        await ctx.writes.call(
            "send_to_device",
            {
                "sender": requester.user_id,
                "sender_device": requester.device_id,
                "txn_id": txn_id,
                "type": event_type,
                "messages": messages,
            },
        )
        return 200, {}

    router.add_client(
        "PUT",
        r"/sendToDevice/(?P<event_type>[^/]+)/(?P<txn_id>[^/]+)",
        on_send,
        "/_matrix/client/v3/sendToDevice/{eventType}/{txnId}",
    )
    register_sync_source(ctx, ToDeviceSyncSource(ctx))
