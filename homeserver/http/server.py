"""A Twisted web server speaking Matrix: regex routes, JSON in and out, errors as Matrix errors.

Resources register routes with a `Router`; `MatrixSite` enforces the request body limit
while the body streams in, so an oversized body never sits in memory.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any
from urllib.parse import unquote

from prometheus_client import Counter, Histogram
from twisted.internet import defer
from twisted.python.failure import Failure
from twisted.web import resource, server
from twisted.web.http import HTTPChannel
from twisted.web.server import NOT_DONE_YET, Request

from homeserver.http.errors import MatrixError, bad_json, bad_type, too_large, unrecognized

logger = logging.getLogger(__name__)

JsonDict = dict[str, Any]
Handler = Callable[..., Awaitable[tuple[int, Any]]]

REQUESTS = Counter(
    "ganglion_http_requests_total",
    "HTTP requests handled, by endpoint, method and status",
    ["endpoint", "method", "status"],
)
REQUEST_DURATION = Histogram(
    "ganglion_http_request_duration_seconds",
    "HTTP request latency from receipt of the body to the response, by endpoint and method",
    ["endpoint", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)

CORS_HEADERS = {
    b"Access-Control-Allow-Methods": b"GET, HEAD, POST, PUT, DELETE, OPTIONS",
    b"Access-Control-Allow-Headers": b"X-Requested-With, Content-Type, Authorization, Date",
    b"Access-Control-Expose-Headers": b"Synapse-Trace-Id, Server",
}


class MatrixRequest(Request):
    """A request that stops storing its body once it exceeds the site's limit."""

    body_too_large = False
    _body_seen = 0

    def _limit(self) -> int:
        site = getattr(self.channel, "site", None)
        return int(getattr(site, "max_body_size", 1 << 20))

    def gotLength(self, length: int | None) -> None:
        if length is not None and length > self._limit():
            self.body_too_large = True
            length = 0
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        if self.body_too_large:
            return
        self._body_seen += len(data)
        if self._body_seen > self._limit():
            self.body_too_large = True
            if self.content is not None:
                self.content.seek(0)
                self.content.truncate()
            return
        super().handleContentChunk(data)


class MatrixSite(server.Site):
    requestFactory = MatrixRequest  # type: ignore[assignment]

    def __init__(self, root: resource.Resource, *, max_body_size: int, name: str) -> None:
        super().__init__(root)
        self.max_body_size = max_body_size
        self.name = name
        self.noisy = False

    def log(self, request: Request) -> None:  # type: ignore[override]
        # Access logs come from our own structured logger, not twisted.web's.
        pass


class Route:
    __slots__ = ("method", "regex", "handler", "name")

    def __init__(self, method: str, regex: re.Pattern[str], handler: Handler, name: str) -> None:
        self.method = method
        self.regex = regex
        self.handler = handler
        self.name = name


class Router:
    def __init__(self) -> None:
        self.routes: list[Route] = []

    def add(self, method: str, pattern: str, handler: Handler, name: str | None = None) -> None:
        """`pattern` is a regex over the percent-encoded path; named groups become kwargs."""
        self.routes.append(Route(method, re.compile("^" + pattern + "$"), handler, name or pattern))

    def add_client(self, method: str, path: str, handler: Handler, name: str | None = None) -> None:
        """A client-server API route under every version prefix clients use."""
        pattern = r"/_matrix/client/(?:r0|v3|unstable)" + path
        self.add(method, pattern, handler, name or "/_matrix/client/v3" + path)

    def match(self, method: str, path: str) -> tuple[Route | None, dict[str, str], bool]:
        """(route, path args, path_known): path_known tells 405 from 404."""
        path_known = False
        for route in self.routes:
            m = route.regex.match(path)
            if not m:
                continue
            path_known = True
            if route.method == method or (method == "HEAD" and route.method == "GET"):
                return (
                    route,
                    {k: unquote(v) for k, v in m.groupdict().items() if v is not None},
                    True,
                )
        return None, {}, path_known


class JsonResource(resource.Resource):
    """The single leaf resource that dispatches every request through the router."""

    isLeaf = True

    def __init__(self, router: Router, *, cors_origins: Sequence[str] = ("*",)) -> None:
        super().__init__()
        self.router = router
        self.cors_origins = tuple(cors_origins)

    def render(self, request: Request) -> int:
        handling = defer.ensureDeferred(self._dispatch(request))
        if request.method in (b"GET", b"HEAD"):
            # A read whose client has gone is wasted work (a parked /sync would hold its
            # listener for the whole timeout). Writes always run to completion, so that no
            # multi-step write (createRoom) is left half done.
            request.notifyFinish().addErrback(lambda _: handling.cancel())
        return NOT_DONE_YET

    def _set_cors(self, request: Request) -> None:
        if not self.cors_origins:
            return
        if "*" in self.cors_origins:
            request.setHeader(b"Access-Control-Allow-Origin", b"*")
        else:
            origin = request.getHeader("Origin")
            if origin and origin in self.cors_origins:
                request.setHeader(b"Access-Control-Allow-Origin", origin.encode())
                request.setHeader(b"Vary", b"Origin")
        for k, v in CORS_HEADERS.items():
            request.setHeader(k, v)

    async def _dispatch(self, request: Request) -> None:
        start = time.perf_counter()
        method = request.method.decode("ascii", "replace")
        path = request.path.decode("ascii", "replace")
        endpoint = "unknown"
        status = 500
        body: Any
        try:
            self._set_cors(request)
            if method == "OPTIONS":
                status, body = 200, {}
            else:
                route, args, path_known = self.router.match(method, path)
                if route is None:
                    if path_known:
                        raise unrecognized(405, "Unrecognized request: method not allowed")
                    raise unrecognized(404)
                endpoint = route.name
                if getattr(request, "body_too_large", False):
                    raise too_large()
                status, body = await route.handler(request, **args)
        except MatrixError as e:
            status, body = e.status, e.to_json()
        except defer.CancelledError:
            # The client went away (see render); there is no one to answer.
            status, body = 499, None
        except Exception:
            logger.error(
                "request failed",
                exc_info=True,
                extra={"method": method, "path": path, "endpoint": endpoint},
            )
            status, body = 500, {"errcode": "M_UNKNOWN", "error": "Internal server error"}
        finally:
            REQUESTS.labels(endpoint, method, str(status)).inc()
            REQUEST_DURATION.labels(endpoint, method).observe(time.perf_counter() - start)
        if status == 499:
            return
        try:
            respond_json(request, status, body)
        except Exception:
            # The body did not serialise (nothing has been sent yet): answer rather than hang.
            logger.error(
                "response not serialisable",
                exc_info=True,
                extra={"method": method, "path": path, "endpoint": endpoint},
            )
            respond_json(request, 500, {"errcode": "M_UNKNOWN", "error": "Internal server error"})


def respond_json(request: Request, status: int, body: Any) -> None:
    if getattr(request, "_disconnected", False) or request.finished:
        return
    data = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    request.setResponseCode(status)
    request.setHeader(b"Content-Type", b"application/json")
    request.setHeader(b"Content-Length", str(len(data)).encode())
    request.setHeader(b"Cache-Control", b"no-cache, no-store, must-revalidate")
    if request.method != b"HEAD":
        request.write(data)
    request.finish()


# -- request parsing ------------------------------------------------------------------------


def parse_json_object(request: Request, *, allow_empty: bool = False) -> JsonDict:
    raw = request.content.read() if request.content is not None else b""
    if not raw.strip():
        if allow_empty:
            return {}
        raise bad_json("Request body is empty; expected a JSON object.")
    try:
        # Reject NaN/Infinity, which are not JSON.
        value = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:  # Recursion: too deeply nested
        raise bad_json(f"Content not JSON: {e}") from None
    if b"\\u" in raw and not _is_utf8_encodable(value):
        # A lone surrogate escape ("\ud800") decodes to a str no database, bcrypt or
        # response encoder can take as UTF-8: reject it here rather than fail later (500).
        raise bad_json("Content not JSON: a string is not valid Unicode (lone surrogate)")
    if not isinstance(value, dict):
        raise bad_json("Content must be a JSON object.")
    return value


def _is_utf8_encodable(value: Any) -> bool:
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except (UnicodeEncodeError, RecursionError):
        return False
    return True


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def query_arg(request: Request, name: str) -> str | None:
    args: dict[bytes, list[bytes]] = request.args or {}
    values = args.get(name.encode())
    if not values:
        return None
    try:
        return values[0].decode("utf-8")
    except UnicodeDecodeError:
        raise MatrixError(
            400, "M_INVALID_PARAM", f"Query parameter {name!r} is not UTF-8"
        ) from None


def query_int(
    request: Request, name: str, default: int, *, minimum: int = 0, maximum: int | None = None
) -> int:
    raw = query_arg(request, name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise MatrixError(
            400, "M_INVALID_PARAM", f"Query parameter {name!r} must be an integer"
        ) from None
    if value < minimum:
        raise MatrixError(400, "M_INVALID_PARAM", f"Query parameter {name!r} must be >= {minimum}")
    if maximum is not None:
        value = min(value, maximum)
    return value


def require_str(body: Mapping[str, Any], key: str, *, optional: bool = False) -> str | None:
    if key not in body or body[key] is None:
        if optional:
            return None
        raise MatrixError(400, "M_MISSING_PARAM", f"Missing parameter: {key}")
    value = body[key]
    if not isinstance(value, str):
        raise bad_type(f"Parameter {key!r} must be a string")
    return value


def require_object(body: Mapping[str, Any], key: str, *, optional: bool = False) -> JsonDict | None:
    if key not in body:
        if optional:
            return None
        raise MatrixError(400, "M_MISSING_PARAM", f"Missing parameter: {key}")
    value = body[key]
    if not isinstance(value, dict):
        raise bad_type(f"Parameter {key!r} must be an object")
    return value


def on_disconnect(request: Request, callback: Callable[[], None]) -> None:
    """Calls back when the client goes away before the response is written."""

    def _lost(f: Failure) -> None:
        callback()

    request.notifyFinish().addErrback(_lost)


__all__ = [
    "HTTPChannel",
    "JsonResource",
    "MatrixSite",
    "Router",
    "parse_json_object",
    "query_arg",
    "query_int",
    "respond_json",
]
