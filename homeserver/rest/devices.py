"""Device management: GET /devices, GET/PUT/DELETE /devices/{deviceId}, POST /delete_devices.

Renames and deletions are writes of the `device_lists` stream (they change what other
users see of the device list); deletions need user-interactive auth with the password.
"""

from __future__ import annotations

from typing import Any

from twisted.web.server import Request

from homeserver.context import HomeServerContext
from homeserver.handlers.device_lists import DeviceListWriter
from homeserver.handlers.devices import DeviceWriter, password_auth
from homeserver.handlers.stream_writer import get_stream_writer
from homeserver.handlers.writes import Operation
from homeserver.http.errors import bad_type, not_found
from homeserver.http.server import Router, parse_json_object, require_str
from storage.stores.devices import DeviceStore

Result = tuple[int, Any]

STREAM = "device_lists"
WRITE_STREAMS = {
    "device_rename": STREAM,
    "devices_delete": STREAM,
    "device_list_new_device": STREAM,
}


def write_operations(ctx: HomeServerContext) -> dict[str, Operation]:
    store = DeviceStore(ctx.db)
    writer = DeviceWriter(
        store, DeviceListWriter(store, get_stream_writer(ctx, STREAM), ctx.notifier)
    )

    async def device_rename(a: dict[str, Any]) -> dict[str, Any]:
        await writer.rename(a["user_id"], a["device_id"], a["display_name"])
        return {}

    async def devices_delete(a: dict[str, Any]) -> dict[str, Any]:
        await writer.delete(a["user_id"], a["device_ids"])
        return {}

    async def device_list_new_device(a: dict[str, Any]) -> dict[str, Any]:
        await writer.note_new_device(a["user_id"])
        return {}

    return {
        "device_rename": device_rename,
        "devices_delete": devices_delete,
        "device_list_new_device": device_list_new_device,
    }


def install(ctx: HomeServerContext, router: Router) -> None:
    store = DeviceStore(ctx.db)

    async def on_list(request: Request) -> Result:
        requester = await ctx.auth.get_requester(request)
        devices = await store.get_devices(requester.user_id)
        return 200, {"devices": [d.to_json() for d in devices]}

    async def on_get(request: Request, device_id: str) -> Result:
        requester = await ctx.auth.get_requester(request)
        device = await store.get_device(requester.user_id, device_id)
        if device is None:
            raise not_found("No such device")
        return 200, device.to_json()

    async def on_put(request: Request, device_id: str) -> Result:
        requester = await ctx.auth.get_requester(request)
        body = parse_json_object(request)
        display_name = require_str(body, "display_name", optional=True)
        if display_name is None:
            # Nothing to change; the device must still exist.
            if await store.get_device(requester.user_id, device_id) is None:
                raise not_found("No such device")
            return 200, {}
        await ctx.writes.call(
            "device_rename",
            {"user_id": requester.user_id, "device_id": device_id, "display_name": display_name},
        )
        return 200, {}

    async def delete(request: Request, device_ids: list[str], body: dict[str, Any]) -> Result:
        requester = await ctx.auth.get_requester(request)
        challenge = await password_auth(ctx.account_store, ctx.server_name, requester.user_id, body)
        if challenge is not None:
            return challenge
        await ctx.writes.call(
            "devices_delete", {"user_id": requester.user_id, "device_ids": device_ids}
        )
        return 200, {}

    async def on_delete(request: Request, device_id: str) -> Result:
        body = parse_json_object(request, allow_empty=True)
        return await delete(request, [device_id], body)

    async def on_delete_many(request: Request) -> Result:
        body = parse_json_object(request)
        device_ids = body.get("devices")
        if not isinstance(device_ids, list) or not all(isinstance(d, str) for d in device_ids):
            raise bad_type("devices must be a list of device IDs")
        return await delete(request, list(dict.fromkeys(device_ids)), body)

    device_path = r"/devices/(?P<device_id>[^/]+)"
    device_name = "/_matrix/client/v3/devices/{deviceId}"
    router.add_client("GET", r"/devices", on_list, "/_matrix/client/v3/devices")
    router.add_client("GET", device_path, on_get, device_name)
    router.add_client("PUT", device_path, on_put, device_name)
    router.add_client("DELETE", device_path, on_delete, device_name)
    router.add_client(
        "POST", r"/delete_devices", on_delete_many, "/_matrix/client/v3/delete_devices"
    )
