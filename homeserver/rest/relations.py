"""Relations and threads: GET /rooms/{roomId}/relations/{eventId}[/{relType}[/{eventType}]]
and GET /rooms/{roomId}/threads (client-server API v1).

install() also registers the persist hook that records relations, redactions and
replaced state, and shares the EventSerializer as ctx.extras["serializer"].
"""

from __future__ import annotations

from typing import Any

import attrs
from twisted.web.server import Request

from homeserver.context import HomeServerContext
from homeserver.handlers.auth import Authenticator
from homeserver.handlers.event_serializer import SERIALIZER_KEY, EventSerializer
from homeserver.handlers.relations import RelationsHandler, RelationsQuery
from homeserver.handlers.visibility import VisibilityFilter
from homeserver.http.errors import MatrixError, bad_param
from homeserver.http.server import Router, query_arg, query_int
from homeserver.sync.tokens import StreamToken, TokenError
from storage.stores.relations import RelationsStore, register_hooks
from workers.config import LimitsConfig

Result = tuple[int, Any]

_PREFIX = r"/_matrix/client/(?:v1|unstable)"
_ROOM = r"/rooms/(?P<room_id>[^/]+)"


def get_serializer(ctx: HomeServerContext) -> EventSerializer:
    """The process's EventSerializer (created on first use, so install order does not matter)."""
    serializer = ctx.extras.get(SERIALIZER_KEY)
    if serializer is None:
        serializer = EventSerializer(ctx.event_store, RelationsStore(ctx.db), ctx.clock_ms)
        ctx.extras[SERIALIZER_KEY] = serializer
    assert isinstance(serializer, EventSerializer)
    return serializer


def _token(request: Request, name: str) -> StreamToken | None:
    raw = query_arg(request, name)
    if raw is None:
        return None
    try:
        return StreamToken.decode(raw)
    except TokenError as e:
        raise MatrixError(400, "M_INVALID_PARAM", f"Invalid {name}: {e}") from None


def _path_id(value: str, sigil: str, what: str) -> str:
    if not value.startswith(sigil) or len(value) > 255:
        raise bad_param(f"Invalid {what}")
    return value


@attrs.define
class RelationsApi:
    auth: Authenticator
    handler: RelationsHandler
    limits: LimitsConfig

    def register_routes(self, router: Router) -> None:
        # One route per shape: the router does not take optional groups.
        relations = _PREFIX + _ROOM + r"/relations/(?P<event_id>[^/]+)"
        name = "/_matrix/client/v1/rooms/{roomId}/relations/{eventId}"
        router.add("GET", relations, self.on_relations, name)
        router.add(
            "GET", relations + r"/(?P<rel_type>[^/]+)", self.on_relations, name + "/{relType}"
        )
        router.add(
            "GET",
            relations + r"/(?P<rel_type>[^/]+)/(?P<event_type>[^/]+)",
            self.on_relations,
            name + "/{relType}/{eventType}",
        )
        router.add(
            "GET",
            _PREFIX + _ROOM + r"/threads",
            self.on_threads,
            "/_matrix/client/v1/rooms/{roomId}/threads",
        )

    async def on_relations(
        self,
        request: Request,
        room_id: str,
        event_id: str,
        rel_type: str | None = None,
        event_type: str | None = None,
    ) -> Result:
        requester = await self.auth.get_requester(request)
        direction = query_arg(request, "dir") or "b"
        if direction not in ("b", "f"):
            raise bad_param("dir must be 'b' or 'f'")
        recurse_raw = query_arg(request, "recurse")
        if recurse_raw not in (None, "true", "false"):
            raise bad_param("recurse must be 'true' or 'false'")
        query = RelationsQuery(
            room_id=_path_id(room_id, "!", "room ID"),
            event_id=_path_id(event_id, "$", "event ID"),
            rel_type=rel_type or None,
            event_type=event_type or None,
            from_token=_token(request, "from"),
            to_token=_token(request, "to"),
            direction=direction,
            limit=query_int(
                request,
                "limit",
                self.limits.default_relations_limit,
                minimum=1,
                maximum=self.limits.max_relations_limit,
            ),
            recurse=None if recurse_raw is None else recurse_raw == "true",
        )
        return 200, await self.handler.get_relations(requester.user_id, requester.device_id, query)

    async def on_threads(self, request: Request, room_id: str) -> Result:
        requester = await self.auth.get_requester(request)
        include = query_arg(request, "include") or "all"
        if include not in ("all", "participated"):
            raise bad_param("include must be 'all' or 'participated'")
        return 200, await self.handler.get_threads(
            requester.user_id,
            requester.device_id,
            _path_id(room_id, "!", "room ID"),
            participated_only=include == "participated",
            from_token=_token(request, "from"),
            limit=query_int(
                request,
                "limit",
                self.limits.default_threads_limit,
                minimum=1,
                maximum=self.limits.max_threads_limit,
            ),
        )


def install(ctx: HomeServerContext, router: Router) -> None:
    # Only the events writer persists; registering everywhere is harmless.
    register_hooks()
    serializer = get_serializer(ctx)
    handler = RelationsHandler(
        ctx.event_store,
        serializer.relations,
        serializer,
        VisibilityFilter.install(ctx),
        ctx.events_tracker,
        ctx.config.limits.relations_recursion_depth,
    )
    RelationsApi(ctx.auth, handler, ctx.config.limits).register_routes(router)
