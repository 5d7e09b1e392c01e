"""Endpoints that describe the server: health, well-known, signing keys, admin registration."""

from __future__ import annotations

from typing import Any

import attrs
from signedjson.key import SigningKey
from twisted.web.server import Request

from homeserver.context import HomeServerContext
from homeserver.events.signing import build_server_keys_response
from homeserver.handlers.writes import Operation, Writes
from homeserver.http.errors import not_found
from homeserver.http.server import Router, parse_json_object
from workers.config import HomeserverConfig

Result = tuple[int, Any]
KEY_VALIDITY_MS = 24 * 3600 * 1000


@attrs.define
class ServerInfoApi:
    config: HomeserverConfig
    signing_key: SigningKey
    writes: Writes
    clock_ms: Any

    def register_routes(self, router: Router) -> None:
        router.add("GET", r"/health", self.on_health)
        router.add("GET", r"/\.well-known/matrix/client", self.on_well_known)
        router.add(
            "GET", r"/_matrix/key/v2/server(?:/[^/]*)?", self.on_keys, "/_matrix/key/v2/server"
        )
        router.add("GET", r"/_synapse/admin/v1/register", self.on_admin_nonce)
        router.add("POST", r"/_synapse/admin/v1/register", self.on_admin_register)

    async def on_health(self, request: Request) -> Result:
        return 200, {"status": "ok"}

    async def on_well_known(self, request: Request) -> Result:
        base = self.config.well_known_client_base_url
        if not base:
            raise not_found("No .well-known configured")
        return 200, {"m.homeserver": {"base_url": base}}

    async def on_keys(self, request: Request) -> Result:
        return 200, build_server_keys_response(
            self.config.server_name, self.signing_key, self.clock_ms() + KEY_VALIDITY_MS
        )

    async def on_admin_nonce(self, request: Request) -> Result:
        return 200, await self.writes.call("admin_nonce", {})

    async def on_admin_register(self, request: Request) -> Result:
        body = parse_json_object(request)
        return 200, await self.writes.call("admin_register", {"body": body})


WRITE_STREAMS = {"admin_nonce": "events", "admin_register": "events"}


def write_operations(ctx: HomeServerContext) -> dict[str, Operation]:
    accounts = ctx.accounts
    assert accounts is not None

    async def admin_nonce(a: dict[str, Any]) -> dict[str, Any]:
        # Nonces live in the writer's memory, so both halves of the flow run there.
        return {"nonce": accounts.new_nonce()}

    async def admin_register(a: dict[str, Any]) -> dict[str, Any]:
        return await accounts.admin_register(a["body"])

    return {"admin_nonce": admin_nonce, "admin_register": admin_register}


def install(ctx: HomeServerContext, router: Router) -> None:
    ServerInfoApi(
        config=ctx.config, signing_key=ctx.signing_key, writes=ctx.writes, clock_ms=ctx.clock_ms
    ).register_routes(router)
