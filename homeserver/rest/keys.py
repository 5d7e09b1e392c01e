"""End-to-end encryption keys: POST /keys/upload, /keys/query, /keys/claim, GET /keys/changes,
POST /keys/device_signing/upload and /keys/signatures/upload; and the E2EE /sync fields.

Uploads, claims (a claim consumes keys) and signatures are writes of the `device_lists`
stream. Shapes and signatures are checked here, before anything is forwarded or stored.
"""

from __future__ import annotations

from typing import Any

from twisted.web.server import Request

from homeserver.context import HomeServerContext
from homeserver.handlers.device_lists import (
    STREAM,
    DeviceListChanges,
    DeviceListsSyncSource,
    DeviceListWriter,
)
from homeserver.handlers.devices import password_auth
from homeserver.handlers.keys import (
    KeyReader,
    KeyWriter,
    changed_cross_signing,
    cross_signing_upload,
    validate_device_keys,
    validate_key_map,
)
from homeserver.handlers.stream_writer import get_stream_writer
from homeserver.handlers.writes import Operation
from homeserver.http.errors import MatrixError, bad_param, bad_type, missing_param
from homeserver.http.server import Router, parse_json_object, query_arg
from homeserver.sync.sources import register_sync_source
from homeserver.sync.tokens import StreamToken, TokenError
from storage.stores.devices import DeviceStore
from storage.stores.keys import KeyStore

Result = tuple[int, Any]

WRITE_STREAMS = {
    "keys_upload": STREAM,
    "keys_claim": STREAM,
    "cross_signing_upload": STREAM,
    "signatures_upload": STREAM,
}


def write_operations(ctx: HomeServerContext) -> dict[str, Operation]:
    devices = DeviceStore(ctx.db)
    writer = KeyWriter(
        ctx.server_name,
        KeyStore(ctx.db),
        devices,
        DeviceListWriter(devices, get_stream_writer(ctx, STREAM), ctx.notifier),
    )

    async def keys_upload(a: dict[str, Any]) -> dict[str, Any]:
        counts = await writer.upload(
            a["user_id"],
            a["device_id"],
            a.get("device_keys"),
            a["one_time_keys"],
            a["fallback_keys"],
        )
        return {"one_time_key_counts": counts}

    async def keys_claim(a: dict[str, Any]) -> dict[str, Any]:
        return await writer.claim(a["one_time_keys"])

    async def upload_cross_signing(a: dict[str, Any]) -> dict[str, Any]:
        await writer.upload_cross_signing(a["user_id"], a["keys"])
        return {}

    async def signatures_upload(a: dict[str, Any]) -> dict[str, Any]:
        return await writer.upload_signatures(a["user_id"], a["signatures"])

    return {
        "keys_upload": keys_upload,
        "keys_claim": keys_claim,
        "cross_signing_upload": upload_cross_signing,
        "signatures_upload": signatures_upload,
    }


def _nested_objects(value: Any, name: str) -> dict[str, dict[str, Any]]:
    if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
        raise bad_type(f"{name} must be an object of objects")
    return value


def _token(request: Request, name: str) -> StreamToken:
    raw = query_arg(request, name)
    if raw is None:
        raise missing_param(f"Missing query parameter {name!r}")
    try:
        return StreamToken.decode(raw)
    except TokenError as e:
        raise bad_param(f"{name}: {e}") from None


def install(ctx: HomeServerContext, router: Router) -> None:
    keys = KeyStore(ctx.db)
    reader = KeyReader(ctx.server_name, keys)
    changes = DeviceListChanges(DeviceStore(ctx.db))

    async def on_upload(request: Request) -> Result:
        requester = await ctx.auth.get_requester(request)
        body = parse_json_object(request)
        device_keys = body.get("device_keys")
        if device_keys is not None:
            validate_device_keys(requester.user_id, requester.device_id, device_keys)
        one_time_keys = validate_key_map(body.get("one_time_keys"), "one_time_keys")
        fallback_keys = validate_key_map(body.get("fallback_keys"), "fallback_keys")
        return 200, await ctx.writes.call(
            "keys_upload",
            {
                "user_id": requester.user_id,
                "device_id": requester.device_id,
                "device_keys": device_keys,
                "one_time_keys": one_time_keys,
                "fallback_keys": fallback_keys,
            },
        )

    async def on_query(request: Request) -> Result:
        requester = await ctx.auth.get_requester(request)
        body = parse_json_object(request)
        wanted = body.get("device_keys")
        if not isinstance(wanted, dict):
            raise bad_type("device_keys must be an object of user IDs")
        for user_id, device_ids in wanted.items():
            if not isinstance(device_ids, list) or not all(isinstance(d, str) for d in device_ids):
                raise bad_type(f"device_keys[{user_id!r}] must be a list of device IDs")
        return 200, await reader.query(requester.user_id, wanted)

    async def on_claim(request: Request) -> Result:
        await ctx.auth.get_requester(request)
        body = parse_json_object(request)
        wanted = _nested_objects(body.get("one_time_keys"), "one_time_keys")
        for user_id, by_device in wanted.items():
            if not all(isinstance(a, str) for a in by_device.values()):
                raise bad_type(f"one_time_keys[{user_id!r}] must map device IDs to algorithms")
        return 200, await ctx.writes.call("keys_claim", {"one_time_keys": wanted})

    async def on_changes(request: Request) -> Result:
        requester = await ctx.auth.get_requester(request)
        since, until = _token(request, "from"), _token(request, "to")
        lists_up_to = min(until.device_lists, ctx.trackers[STREAM].position)
        events_up_to = min(until.events, ctx.events_tracker.position)
        changed, left = await changes.between(
            requester.user_id, since.device_lists, lists_up_to, since.events, events_up_to
        )
        return 200, {"changed": changed, "left": left}

    async def on_device_signing_upload(request: Request) -> Result:
        requester = await ctx.auth.get_requester(request)
        body = parse_json_object(request)
        stored = await keys.get_cross_signing_keys(requester.user_id)
        new = cross_signing_upload(requester.user_id, body, stored)
        if "master" in stored and changed_cross_signing(new, stored):
            # Replacing keys needs the password; the first upload needs none.
            challenge = await password_auth(
                ctx.account_store, ctx.server_name, requester.user_id, body
            )
            if challenge is not None:
                return challenge
        if new and changed_cross_signing(new, stored):
            await ctx.writes.call(
                "cross_signing_upload", {"user_id": requester.user_id, "keys": new}
            )
        return 200, {}

    async def on_signatures_upload(request: Request) -> Result:
        requester = await ctx.auth.get_requester(request)
        body = parse_json_object(request)
        signatures = _nested_objects(body, "the body")
        if not signatures:
            raise MatrixError(400, "M_MISSING_PARAM", "No signatures to upload")
        return 200, await ctx.writes.call(
            "signatures_upload", {"user_id": requester.user_id, "signatures": signatures}
        )

    c = router.add_client
    c("POST", r"/keys/upload", on_upload, "/_matrix/client/v3/keys/upload")
    c("POST", r"/keys/query", on_query, "/_matrix/client/v3/keys/query")
    c("POST", r"/keys/claim", on_claim, "/_matrix/client/v3/keys/claim")
    c("GET", r"/keys/changes", on_changes, "/_matrix/client/v3/keys/changes")
    c(
        "POST",
        r"/keys/device_signing/upload",
        on_device_signing_upload,
        "/_matrix/client/v3/keys/device_signing/upload",
    )
    c(
        "POST",
        r"/keys/signatures/upload",
        on_signatures_upload,
        "/_matrix/client/v3/keys/signatures/upload",
    )
    register_sync_source(ctx, DeviceListsSyncSource(ctx))
