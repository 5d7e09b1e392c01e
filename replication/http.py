"""The internal replication HTTP API: workers forward writes to a stream's writer.

Served on the writer's replication listener only (never routed by the reverse proxy),
protected by the shared replication secret. A call names an operation and carries its
JSON arguments; the answer carries the result and the stream positions the caller must
reach before it answers its own client (read-your-writes).
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from twisted.internet import defer
from twisted.web.client import Agent, HTTPConnectionPool, readBody
from twisted.web.http_headers import Headers
from twisted.web.iweb import IBodyProducer
from twisted.web.server import Request
from zope.interface import implementer  # type: ignore[import-untyped]

from homeserver.http.errors import MatrixError
from homeserver.http.server import JsonResource, Router, parse_json_object, query_int

logger = logging.getLogger(__name__)

Operation = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
# The rows of a stream in (after, up_to] as JSON objects, for streams whose rows are not in
# the shared database (e.g. kept in the writer's memory); the stream defines their shape.
RowsProvider = Callable[[int, int], Awaitable[list[dict[str, Any]]]]
PREFIX = "/_ganglion/replication"


class ReplicationServer:
    """Registry of operations a writer performs for other processes."""

    def __init__(self, secret: str, positions: Callable[[], dict[str, int]]) -> None:
        self.secret = secret.encode()
        self.positions = positions
        self.operations: dict[str, Operation] = {}
        self.row_providers: dict[str, RowsProvider] = {}

    def register(self, name: str, op: Operation) -> None:
        self.operations[name] = op

    def register_rows(self, stream: str, provider: RowsProvider) -> None:
        self.row_providers[stream] = provider

    def _check_secret(self, request: Request) -> None:
        header = request.getHeader("Authorization") or ""
        token = header[len("Bearer ") :].encode() if header.startswith("Bearer ") else b""
        if not hmac.compare_digest(token, self.secret):
            raise MatrixError(403, "M_FORBIDDEN", "Bad replication secret")

    def resource(self) -> JsonResource:
        router = Router()
        router.add(
            "POST", PREFIX + r"/call/(?P<name>[a-z_]+)", self._on_call, PREFIX + "/call/{name}"
        )
        router.add("GET", PREFIX + r"/positions", self._on_positions, PREFIX + "/positions")
        router.add(
            "GET",
            PREFIX + r"/rows/(?P<stream>[a-z0-9_-]+)",
            self._on_rows,
            PREFIX + "/rows/{stream}",
        )
        router.add("GET", r"/health", self._on_health, "/health")
        return JsonResource(router, cors_origins=())

    async def _on_health(self, request: Request) -> tuple[int, Any]:
        return 200, {"status": "ok"}

    async def _on_positions(self, request: Request) -> tuple[int, Any]:
        self._check_secret(request)
        return 200, {"positions": self.positions()}

    async def _on_rows(self, request: Request, stream: str) -> tuple[int, Any]:
        self._check_secret(request)
        provider = self.row_providers.get(stream)
        if provider is None:
            raise MatrixError(404, "M_UNRECOGNIZED", f"No rows are served for stream {stream!r}")
        after = query_int(request, "after", 0, minimum=0)
        up_to = query_int(request, "up_to", self.positions().get(stream, 0), minimum=0)
        return 200, {"rows": await provider(after, up_to), "positions": self.positions()}

    async def _on_call(self, request: Request, name: str) -> tuple[int, Any]:
        self._check_secret(request)
        op = self.operations.get(name)
        if op is None:
            raise MatrixError(404, "M_UNRECOGNIZED", f"Unknown replication operation {name!r}")
        args = parse_json_object(request)
        before = self.positions()
        result = await op(args)
        # Only the streams that moved while the operation ran: a write returns once its
        # own positions are visible, so a stream it wrote has moved, and the caller need
        # not wait for the others to catch up.
        after = self.positions()
        moved = {s: pos for s, pos in after.items() if pos > before.get(s, -1)}
        return 200, {"result": result, "positions": moved}


@implementer(IBodyProducer)
class _Body:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.length = len(data)

    def startProducing(self, consumer: Any) -> defer.Deferred[None]:
        consumer.write(self.data)
        return defer.succeed(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


class ReplicationClient:
    """Calls operations on a writer; errors the writer raised are re-raised as they were."""

    def __init__(self, reactor: Any, base_url: str, secret: str, timeout_s: float = 60.0) -> None:
        self.reactor = reactor
        self.base_url = base_url.rstrip("/")
        self.secret = secret
        self.timeout_s = timeout_s
        pool = HTTPConnectionPool(reactor, persistent=True)
        pool.maxPersistentPerHost = 20
        self.agent = Agent(reactor, pool=pool, connectTimeout=5)

    async def _request(
        self, method: bytes, path: str, body: dict[str, Any] | None
    ) -> dict[str, Any]:
        headers = Headers(
            {
                b"Authorization": [f"Bearer {self.secret}".encode()],
                b"Content-Type": [b"application/json"],
            }
        )
        producer: Any = _Body(json.dumps(body).encode()) if body is not None else None
        d = self.agent.request(method, (self.base_url + path).encode(), headers, producer)
        d.addTimeout(self.timeout_s, self.reactor)
        try:
            response = await d
            raw = await readBody(response)
        except Exception as e:
            logger.warning("replication request failed", extra={"path": path, "error": repr(e)})
            raise MatrixError(
                502, "M_UNKNOWN", "The writer process is unavailable; try again"
            ) from e
        try:
            data = json.loads(raw)
        except ValueError:
            raise MatrixError(502, "M_UNKNOWN", "Bad answer from the writer process") from None
        if response.code != 200:
            if isinstance(data, dict) and "errcode" in data:
                extra = {k: v for k, v in data.items() if k not in ("errcode", "error")}
                raise MatrixError(response.code, data["errcode"], data.get("error", ""), **extra)
            raise MatrixError(502, "M_UNKNOWN", "Bad answer from the writer process")
        if not isinstance(data, dict):
            raise MatrixError(502, "M_UNKNOWN", "Bad answer from the writer process")
        return data

    async def call(self, name: str, args: dict[str, Any]) -> tuple[dict[str, Any], dict[str, int]]:
        data = await self._request(b"POST", f"{PREFIX}/call/{name}", args)
        return data.get("result") or {}, {
            k: int(v) for k, v in (data.get("positions") or {}).items()
        }

    async def rows(self, stream: str, after: int, up_to: int) -> list[dict[str, Any]]:
        """The writer's rows of `stream` in (after, up_to] (for streams it serves rows of)."""
        data = await self._request(
            b"GET", f"{PREFIX}/rows/{stream}?after={after}&up_to={up_to}", None
        )
        rows = data.get("rows")
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise MatrixError(502, "M_UNKNOWN", "Bad answer from the writer process")
        return rows

    async def positions(self) -> dict[str, int]:
        data = await self._request(b"GET", f"{PREFIX}/positions", None)
        return {k: int(v) for k, v in (data.get("positions") or {}).items()}
