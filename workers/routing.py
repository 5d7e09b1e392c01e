"""Which process type serves which request: the routing table as data.

The reverse proxy config (`workers.deploy.nginx`) is rendered from `ROUTES`; nothing
about routing is kept anywhere else. A request matching no route goes to `main`,
and so do the routes of a worker type that has no workers configured.

Stickiness: some routes must always reach the same worker for the same user (so
that per-user state such as a /sync long-poll stays in one process). Access tokens
carry a routing key for that purpose:

    gan_<user key>_<random>

where the user key is the lowercase, unpadded base32 encoding of the user's
localpart (alphabet a-z2-7, so it never contains "_"). nginx extracts it from
`Authorization: Bearer …` or the `access_token` query parameter with `map` blocks
and hashes on it; `token_user_key` / `request_user_key` mirror that extraction in
Python. The key is only a routing hint: the token is still authenticated by the
process that receives it.
"""

from __future__ import annotations

import base64
import re
import secrets
from collections.abc import Sequence
from typing import Literal

import attrs

from workers.config import MAIN_PROCESS, STREAMS, WORKER_TYPES, HomeserverConfig

Sticky = Literal["user", "room"]

TOKEN_PREFIX = "gan_"

# nginx (PCRE) and Python `re` agree on these patterns exactly; they are used
# verbatim in the rendered nginx `map` blocks.
#: Applied to the Authorization header. The scheme is case-insensitive (RFC 9110).
AUTH_HEADER_USER_KEY_RE = r"^(?i:bearer) +gan_([a-z2-7]+)_"
#: Applied to the raw (still percent-encoded) `access_token` query parameter.
QUERY_TOKEN_USER_KEY_RE = r"^gan_([a-z2-7]+)_"
#: Applied to the request path for room-sticky routes.
ROOM_KEY_RE = r"^/_matrix/client/[^/]+/rooms/([^/]+)/"

_AUTH_RE = re.compile(AUTH_HEADER_USER_KEY_RE)
_QUERY_RE = re.compile(QUERY_TOKEN_USER_KEY_RE)
_USER_KEY_RE = re.compile(r"^[a-z2-7]+$")

# Paths under this prefix are internal to Ganglion and never reachable through the proxy.
INTERNAL_PATH_PREFIX = "/_ganglion/"


@attrs.frozen(slots=True)
class Route:
    """Requests whose path matches `pattern` are served by a `worker_type` process."""

    #: A regular expression on the request path, valid in both nginx (PCRE) and Python.
    pattern: str
    worker_type: str
    sticky: Sticky | None = None
    #: Long-polling route: the proxy must not buffer responses.
    streaming: bool = False
    #: Set: the request goes to the one process that writes this stream (`stream_writers`
    #: in the config; main by default), whatever its type; `worker_type` is then "main".
    writer_of: str | None = None

    def __attrs_post_init__(self) -> None:
        if self.worker_type not in WORKER_TYPES:
            raise ValueError(f"unknown worker type {self.worker_type!r}")
        if self.writer_of is not None and (
            self.writer_of not in STREAMS or self.worker_type != MAIN_PROCESS or self.sticky
        ):
            raise ValueError(f"bad stream writer route for {self.writer_of!r}")
        if self.sticky not in (None, "user", "room"):
            raise ValueError(f"unknown stickiness {self.sticky!r}")
        re.compile(self.pattern)

    def matches(self, path: str) -> bool:
        return re.search(self.pattern, path) is not None


def writer_route(pattern: str, stream: str) -> Route:
    """A route to the writer of `stream`: its writes then need no forwarding hop."""
    return Route(pattern, MAIN_PROCESS, writer_of=stream)


_CLIENT = r"^/_matrix/client/(r0|v3|unstable)"

ROUTES: tuple[Route, ...] = (
    Route(r"^/_matrix/client/(r0|v3|unstable)/sync$", "sync", sticky="user", streaming=True),
    # The per-user streams' write endpoints (their reads too, where they share the path).
    writer_route(_CLIENT + r"/rooms/[^/]+/typing/[^/]+$", "typing"),
    writer_route(_CLIENT + r"/rooms/[^/]+/receipt/[^/]+/[^/]+$", "receipts"),
    writer_route(_CLIENT + r"/rooms/[^/]+/read_markers$", "receipts"),
    writer_route(_CLIENT + r"/presence/[^/]+/status$", "presence"),
    writer_route(_CLIENT + r"/user/[^/]+/(rooms/[^/]+/)?account_data/[^/]+$", "account_data"),
    writer_route(_CLIENT + r"/user/[^/]+/rooms/[^/]+/tags(/[^/]+)?$", "account_data"),
    writer_route(_CLIENT + r"/sendToDevice/[^/]+/[^/]+$", "to_device"),
    # Key uploads and claims (a claim consumes keys), device updates and deletions.
    writer_route(
        _CLIENT + r"/keys/(upload|claim|device_signing/upload|signatures/upload)$", "device_lists"
    ),
    writer_route(_CLIENT + r"/devices/[^/]+$", "device_lists"),
    writer_route(_CLIENT + r"/delete_devices$", "device_lists"),
    # Room history by room, so that one room's pagination stays in one process's caches.
    Route(_CLIENT + r"/rooms/[^/]+/messages$", "client_reader", sticky="room"),
    # Reads of rooms and the directory (writes on these paths are forwarded to the writer).
    Route(
        r"^/_matrix/client/(r0|v3|unstable|v1)/rooms/[^/]+/"
        r"(context|event|members|joined_members|state|relations|threads|timestamp_to_event)"
        r"(/|$)",
        "client_reader",
    ),
    Route(_CLIENT + r"/joined_rooms$", "client_reader"),
    Route(_CLIENT + r"/publicRooms$", "client_reader"),
    Route(_CLIENT + r"/directory/room/[^/]+$", "client_reader"),
    Route(_CLIENT + r"/login$", "client_reader"),
    Route(r"^/_matrix/client/versions$", "client_reader"),
)


def routes_for(worker_type: str, routes: Sequence[Route] = ROUTES) -> tuple[Route, ...]:
    """The routes served by `worker_type` (main serves everything unrouted); routes to a
    stream's writer are not by type (see `writer_routes`)."""
    return tuple(r for r in routes if r.worker_type == worker_type and r.writer_of is None)


def writer_routes(stream: str, routes: Sequence[Route] = ROUTES) -> tuple[Route, ...]:
    """The routes served by the writer of `stream`."""
    return tuple(r for r in routes if r.writer_of == stream)


def route_for_path(path: str, routes: Sequence[Route] = ROUTES) -> Route | None:
    """The first route matching `path`, or None when the request belongs to main."""
    for route in routes:
        if route.matches(path):
            return route
    return None


def worker_type_for_path(path: str, routes: Sequence[Route] = ROUTES) -> str:
    route = route_for_path(path, routes)
    return route.worker_type if route is not None else MAIN_PROCESS


def writer_process(config: HomeserverConfig, route: Route) -> str | None:
    """The process name a stream-writer route resolves to under `config` (else None)."""
    if route.writer_of is None:
        return None
    return config.writer_of(route.writer_of).name


# -- access tokens and the user routing key ----------------------------------


def user_key_for_localpart(localpart: str) -> str:
    """The routing key of a user: lowercase unpadded base32 of the UTF-8 localpart."""
    if not localpart:
        raise ValueError("localpart must not be empty")
    return base64.b32encode(localpart.encode("utf-8")).decode("ascii").rstrip("=").lower()


def localpart_for_user_key(key: str) -> str:
    """Inverse of `user_key_for_localpart` (for diagnostics)."""
    if not _USER_KEY_RE.match(key):
        raise ValueError(f"not a user key: {key!r}")
    padded = key.upper() + "=" * (-len(key) % 8)
    return base64.b32decode(padded).decode("utf-8")


def make_access_token(localpart: str, random_part: str | None = None) -> str:
    """A new access token `gan_<user key>_<random>` for the user with `localpart`.

    The random part is URL-safe (it may itself contain "_"; only the first two
    underscores delimit the user key).
    """
    if random_part is None:
        random_part = secrets.token_urlsafe(32)
    if not random_part:
        raise ValueError("random_part must not be empty")
    return f"{TOKEN_PREFIX}{user_key_for_localpart(localpart)}_{random_part}"


def token_user_key(token: str) -> str | None:
    """The user routing key of an access token, exactly as nginx extracts it; else None."""
    m = _QUERY_RE.match(token)
    return m.group(1) if m else None


def request_user_key(authorization: str | None, query_access_token: str | None) -> str:
    """The value nginx computes for `$ganglion_user` ("" when there is none).

    The Authorization header wins over the query parameter, as in the nginx maps.
    `query_access_token` is the raw value as it appears in the query string.
    """
    if authorization is not None:
        m = _AUTH_RE.match(authorization)
        if m:
            return m.group(1)
    if query_access_token is not None:
        m = _QUERY_RE.match(query_access_token)
        if m:
            return m.group(1)
    return ""
