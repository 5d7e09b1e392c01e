"""The Matrix HTTP layer: routing, dispatch, errors, CORS, body limits and request parsing.

Most tests drive a real `MatrixSite`/`HTTPChannel` with raw request bytes over a
`StringTransport`, so Twisted's own HTTP parsing (Content-Length, chunked bodies) is
exercised together with our request class.
"""

from __future__ import annotations

import io
import json
from typing import Any, cast

import pytest
from prometheus_client import REGISTRY
from twisted.internet import defer
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.web.server import Request
from twisted.web.test.requesthelper import DummyRequest

from homeserver.http.errors import MatrixError
from homeserver.http.server import (
    JsonResource,
    MatrixSite,
    Router,
    on_disconnect,
    parse_json_object,
    query_arg,
    query_int,
    require_object,
    require_str,
)

LIMIT = 64


class Response:
    def __init__(self, status: int, headers: dict[str, list[str]], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def header(self, name: str) -> str | None:
        values = self.headers.get(name.lower())
        return values[-1] if values else None

    def json(self) -> Any:
        return json.loads(self.body)


def parse_responses(data: bytes, head: bool = False) -> list[Response]:
    """Splits a byte stream of HTTP/1.1 responses (Content-Length framed)."""
    out: list[Response] = []
    while data:
        head_bytes, sep, rest = data.partition(b"\r\n\r\n")
        assert sep, f"incomplete response head: {data!r}"
        lines = head_bytes.decode("latin-1").split("\r\n")
        version, status, _ = lines[0].split(" ", 2)
        assert version == "HTTP/1.1"
        headers: dict[str, list[str]] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers.setdefault(name.strip().lower(), []).append(value.strip())
        length = 0 if head else int(headers["content-length"][-1])
        out.append(Response(int(status), headers, rest[:length]))
        data = rest[length:]
    return out


class Server:
    """A MatrixSite on a fake clock with a router of test handlers."""

    def __init__(self, max_body_size: int = LIMIT, cors_origins: tuple[str, ...] = ("*",)) -> None:
        self.calls: list[str] = []
        self.bodies: list[Any] = []
        self.gate: defer.Deferred[None] | None = None
        router = Router()
        router.add("GET", r"/echo/(?P<word>[^/]+)", self.echo, "echo")
        router.add("POST", r"/json", self.post_json, "json")
        router.add("POST", r"/maybe", self.post_maybe)
        router.add("GET", r"/boom", self.boom)
        router.add("GET", r"/forbidden", self.forbidden)
        router.add("GET", r"/slow", self.slow)
        router.add("GET", r"/unserialisable", self.unserialisable)
        router.add_client("GET", r"/thing/(?P<thing_id>[^/]+)", self.echo_thing)
        self.router = router
        self.clock = Clock()
        self.site = MatrixSite(
            JsonResource(router, cors_origins=cors_origins), max_body_size=max_body_size, name="t"
        )
        self.site.reactor = cast(IReactorTime, self.clock)  # HTTPChannel timeouts on the fake clock

    # -- handlers -------------------------------------------------------------------------

    async def echo(self, request: Request, word: str) -> tuple[int, Any]:
        self.calls.append("echo")
        return 200, {"word": word}

    async def echo_thing(self, request: Request, thing_id: str) -> tuple[int, Any]:
        self.calls.append("thing")
        return 200, {"thing_id": thing_id}

    async def post_json(self, request: Request) -> tuple[int, Any]:
        self.calls.append("json")
        body = parse_json_object(request)
        self.bodies.append(body)
        return 200, {"got": body}

    async def post_maybe(self, request: Request) -> tuple[int, Any]:
        self.calls.append("maybe")
        return 200, {"got": parse_json_object(request, allow_empty=True)}

    async def boom(self, request: Request) -> tuple[int, Any]:
        self.calls.append("boom")
        raise RuntimeError("secret-internal-detail")

    async def forbidden(self, request: Request) -> tuple[int, Any]:
        raise MatrixError(403, "M_FORBIDDEN", "Go away", retry_after_ms=5)

    async def slow(self, request: Request) -> tuple[int, Any]:
        self.gate = defer.Deferred()
        await self.gate
        self.calls.append("slow-done")
        return 200, {}

    async def unserialisable(self, request: Request) -> tuple[int, Any]:
        return 200, {"not": {1, 2}}

    # -- driving --------------------------------------------------------------------------

    def connect(self) -> tuple[Any, StringTransport]:
        proto = self.site.buildProtocol(None)
        transport = StringTransport()
        proto.makeConnection(transport)
        return proto, transport

    def raw(self, data: bytes, head: bool = False) -> list[Response]:
        proto, transport = self.connect()
        proto.dataReceived(data)
        responses = parse_responses(transport.value(), head=head)
        proto.connectionLost(Failure(ConnectionDone()))
        return responses

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        lines = [f"{method} {path} HTTP/1.1", "Host: test"]
        for k, v in (headers or {}).items():
            lines.append(f"{k}: {v}")
        if body is not None:
            lines.append(f"Content-Length: {len(body)}")
        data = ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")
        responses = self.raw(data, head=method == "HEAD")
        assert len(responses) == 1, responses
        return responses[0]


@pytest.fixture
def srv() -> Server:
    return Server()


def _errcode(resp: Response) -> str:
    body = resp.json()
    assert isinstance(body, dict)
    errcode = body["errcode"]
    assert isinstance(errcode, str)
    return errcode


# -- Router -------------------------------------------------------------------------------


async def _noop(request: Request, **kwargs: str) -> tuple[int, Any]:
    return 200, {}


def test_router_matches_method_and_extracts_unquoted_args() -> None:
    router = Router()
    router.add("GET", r"/rooms/(?P<room_id>[^/]+)/state", _noop, "state")
    route, args, known = router.match("GET", "/rooms/%21abc%3Ahs/state")
    assert route is not None and route.name == "state"
    assert args == {"room_id": "!abc:hs"}
    assert known


def test_router_404_vs_405() -> None:
    router = Router()
    router.add("GET", r"/a", _noop)
    assert router.match("POST", "/a") == (None, {}, True)
    assert router.match("GET", "/b") == (None, {}, False)


def test_router_is_anchored() -> None:
    router = Router()
    router.add("GET", r"/a", _noop)
    assert router.match("GET", "/a/b")[0] is None
    assert router.match("GET", "/x/a")[0] is None
    assert router.match("GET", "/a")[0] is not None


def test_router_head_falls_back_to_get() -> None:
    router = Router()
    router.add("GET", r"/a", _noop, "a")
    route, _, _ = router.match("HEAD", "/a")
    assert route is not None and route.name == "a"


def test_router_picks_route_for_method_among_several_on_one_path() -> None:
    router = Router()
    router.add("PUT", r"/a", _noop, "put")
    router.add("GET", r"/a", _noop, "get")
    route, _, _ = router.match("GET", "/a")
    assert route is not None and route.name == "get"


@pytest.mark.parametrize("prefix", ["r0", "v3", "unstable"])
def test_add_client_accepts_every_version_prefix(prefix: str) -> None:
    router = Router()
    router.add_client("GET", r"/sync", _noop)
    route, _, _ = router.match("GET", f"/_matrix/client/{prefix}/sync")
    assert route is not None
    assert route.name == "/_matrix/client/v3/sync"
    assert router.match("GET", "/_matrix/client/v4/sync")[0] is None


# -- dispatch through a real HTTPChannel --------------------------------------------------


def test_get_route(srv: Server) -> None:
    resp = srv.request("GET", "/echo/hello%20world")
    assert resp.status == 200
    assert resp.json() == {"word": "hello world"}
    assert resp.header("Content-Type") == "application/json"
    assert resp.header("Content-Length") == str(len(resp.body))
    assert resp.header("Cache-Control") == "no-cache, no-store, must-revalidate"


def test_client_route(srv: Server) -> None:
    resp = srv.request("GET", "/_matrix/client/v3/thing/%24ev")
    assert resp.status == 200
    assert resp.json() == {"thing_id": "$ev"}


def test_unknown_path_is_404_unrecognized(srv: Server) -> None:
    resp = srv.request("GET", "/nope")
    assert resp.status == 404
    assert _errcode(resp) == "M_UNRECOGNIZED"
    assert srv.calls == []


def test_wrong_method_is_405_unrecognized(srv: Server) -> None:
    resp = srv.request("DELETE", "/echo/x")
    assert resp.status == 405
    assert _errcode(resp) == "M_UNRECOGNIZED"
    assert srv.calls == []


def test_matrix_error_becomes_json_error(srv: Server) -> None:
    resp = srv.request("GET", "/forbidden")
    assert resp.status == 403
    assert resp.json() == {"errcode": "M_FORBIDDEN", "error": "Go away", "retry_after_ms": 5}


def test_unexpected_exception_is_500_without_details(
    srv: Server, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("ERROR", logger="homeserver.http.server"):
        resp = srv.request("GET", "/boom")
    assert resp.status == 500
    assert resp.json() == {"errcode": "M_UNKNOWN", "error": "Internal server error"}
    assert b"secret-internal-detail" not in resp.body
    assert b"Traceback" not in resp.body
    assert b"RuntimeError" not in resp.body
    # The details go to the log instead.
    assert any(
        r.exc_info and "secret-internal-detail" in str(r.exc_info[1]) for r in caplog.records
    )


def test_unserialisable_handler_result_still_answers_500(srv: Server) -> None:
    # A handler bug must not leave the client hanging without a response.
    resp = srv.request("GET", "/unserialisable")
    assert resp.status == 500
    assert _errcode(resp) == "M_UNKNOWN"


def test_head_has_headers_but_no_body(srv: Server) -> None:
    proto, transport = srv.connect()
    proto.dataReceived(b"HEAD /echo/hi HTTP/1.1\r\nHost: t\r\n\r\n")
    raw = transport.value()
    head, _, rest = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert rest == b""
    assert b"Content-Length: 13" in head  # len('{"word":"hi"}')


def test_cors_headers_on_success_and_error(srv: Server) -> None:
    for path in ("/echo/a", "/nope", "/boom"):
        resp = srv.request("GET", path)
        assert resp.header("Access-Control-Allow-Origin") == "*", path
        assert "OPTIONS" in (resp.header("Access-Control-Allow-Methods") or "")
        assert "Authorization" in (resp.header("Access-Control-Allow-Headers") or "")


def test_options_preflight_for_any_path(srv: Server) -> None:
    for path in ("/echo/a", "/json", "/nope"):
        resp = srv.request("OPTIONS", path)
        assert resp.status == 200, path
        assert resp.json() == {}
        assert resp.header("Access-Control-Allow-Origin") == "*"
        assert resp.header("Access-Control-Allow-Headers") is not None
    assert srv.calls == []


def test_cors_with_origin_list() -> None:
    srv = Server(cors_origins=("https://app.example",))
    ok = srv.request("GET", "/echo/a", headers={"Origin": "https://app.example"})
    assert ok.header("Access-Control-Allow-Origin") == "https://app.example"
    assert ok.header("Vary") == "Origin"
    other = srv.request("GET", "/echo/a", headers={"Origin": "https://evil.example"})
    assert other.header("Access-Control-Allow-Origin") is None
    none = srv.request("GET", "/echo/a")
    assert none.header("Access-Control-Allow-Origin") is None


def test_cors_disabled() -> None:
    srv = Server(cors_origins=())
    resp = srv.request("GET", "/echo/a")
    assert resp.status == 200
    assert resp.header("Access-Control-Allow-Origin") is None
    assert resp.header("Access-Control-Allow-Methods") is None


def test_request_metrics_count_by_endpoint(srv: Server) -> None:
    def count(endpoint: str, method: str, status: str) -> float:
        value = REGISTRY.get_sample_value(
            "ganglion_http_requests_total",
            {"endpoint": endpoint, "method": method, "status": status},
        )
        return value or 0.0

    before_ok = count("echo", "GET", "200")
    before_404 = count("unknown", "GET", "404")
    srv.request("GET", "/echo/a")
    srv.request("GET", "/nowhere")
    assert count("echo", "GET", "200") == before_ok + 1
    assert count("unknown", "GET", "404") == before_404 + 1


def test_client_disconnect_cancels_a_read(srv: Server) -> None:
    proto, transport = srv.connect()
    proto.dataReceived(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
    assert srv.gate is not None
    proto.connectionLost(Failure(ConnectionDone()))
    # The handler's wait was cancelled: it never finishes, and nothing is written.
    assert srv.gate.called
    assert srv.calls == []
    assert transport.value() == b""


def test_client_disconnect_lets_a_write_finish(srv: Server) -> None:
    async def slow_write(request: Request) -> tuple[int, Any]:
        srv.gate = defer.Deferred()
        await srv.gate
        srv.calls.append("write-done")
        return 200, {}

    srv.router.add("POST", r"/slow-write", slow_write)
    proto, transport = srv.connect()
    proto.dataReceived(b"POST /slow-write HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n")
    assert srv.gate is not None
    proto.connectionLost(Failure(ConnectionDone()))
    srv.gate.callback(None)
    assert srv.calls == ["write-done"]
    assert transport.value() == b""


def test_on_disconnect_fires_only_on_early_disconnect(srv: Server) -> None:
    proto, _ = srv.connect()
    lost: list[bool] = []
    seen: list[Request] = []
    original = srv.slow

    async def slow(request: Request) -> tuple[int, Any]:
        on_disconnect(request, lambda: lost.append(True))
        seen.append(request)
        return await original(request)

    srv.router.routes = [r for r in srv.router.routes if r.name != r"/slow"]
    srv.router.add("GET", r"/slow", slow)
    proto.dataReceived(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
    assert seen and lost == []
    proto.connectionLost(Failure(ConnectionDone()))
    assert lost == [True]


# -- bodies and the body-size limit -------------------------------------------------------


def test_post_json_body(srv: Server) -> None:
    resp = srv.request("POST", "/json", b'{"a": [1, "\xc3\xa9"]}')
    assert resp.status == 200
    assert resp.json() == {"got": {"a": [1, "é"]}}


def test_body_at_limit_is_accepted(srv: Server) -> None:
    body = json.dumps({"k": "x" * (LIMIT - 9)}).encode()
    assert len(body) == LIMIT
    resp = srv.request("POST", "/json", body)
    assert resp.status == 200


def test_body_over_limit_by_content_length_is_413(srv: Server) -> None:
    body = json.dumps({"k": "x" * LIMIT}).encode()
    resp = srv.request("POST", "/json", body)
    assert resp.status == 413
    assert _errcode(resp) == "M_TOO_LARGE"
    assert srv.calls == []


def _stored(req: Request) -> bytes:
    """The body bytes a request holds so far (a BytesIO or a temporary file)."""
    content = req.content
    assert content is not None
    here = content.tell()
    content.seek(0)
    data = content.read()
    content.seek(here)
    return data


def test_chunked_body_over_limit_is_413_and_not_stored(srv: Server) -> None:
    requests: list[Request] = []
    original = srv.site.requestFactory

    def factory(*args: Any, **kwargs: Any) -> Request:
        req = original(*args, **kwargs)
        requests.append(req)
        return req

    srv.site.requestFactory = factory  # type: ignore[assignment]
    proto, transport = srv.connect()
    chunk = b"x" * 40
    framed = b"%x\r\n%s\r\n" % (len(chunk), chunk)
    proto.dataReceived(
        b"POST /json HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
        b"Content-Type: application/json\r\n\r\n" + framed
    )
    (req,) = requests
    assert _stored(req) == chunk
    assert not req.body_too_large  # type: ignore[attr-defined]
    proto.dataReceived(framed)  # 80 bytes > 64
    assert req.body_too_large  # type: ignore[attr-defined]
    # What had been stored is dropped, and nothing more is kept while the rest streams in.
    assert _stored(req) == b""
    proto.dataReceived(framed * 3)
    assert _stored(req) == b""
    assert transport.value() == b""  # no answer before the body is complete
    proto.dataReceived(b"0\r\n\r\n")
    (resp,) = parse_responses(transport.value())
    assert resp.status == 413
    assert _errcode(resp) == "M_TOO_LARGE"
    assert srv.calls == []


def test_chunked_body_within_limit_is_accepted(srv: Server) -> None:
    data = (
        b"POST /json HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
        b'4\r\n{"a"\r\n3\r\n:1}\r\n0\r\n\r\n'
    )
    (resp,) = srv.raw(data)
    assert resp.status == 200
    assert resp.json() == {"got": {"a": 1}}


def test_connection_survives_an_oversized_body(srv: Server) -> None:
    # The oversized body is read and discarded, so the next request on the connection
    # is parsed from the right place.
    big = b"y" * (LIMIT * 3)
    data = (
        b"POST /json HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(big)
        + big
        + b"GET /echo/next HTTP/1.1\r\nHost: t\r\n\r\n"
    )
    first, second = srv.raw(data)
    assert first.status == 413
    assert second.status == 200
    assert second.json() == {"word": "next"}


def test_configured_limit_is_used() -> None:
    srv = Server(max_body_size=10_000)
    body = json.dumps({"k": "x" * 5_000}).encode()
    assert srv.request("POST", "/json", body).status == 200
    small = Server(max_body_size=100)
    assert small.request("POST", "/json", body).status == 413


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"[1, 2]",
        b'"a string"',
        b"42",
        b"null",
        b'{"a": NaN}',
        b'{"a": Infinity}',
        b'{"a": -Infinity}',
        b"\xff\xfe{}",
        b'{"a": 1} trailing',
        b"[" * 30 + b"]" * 30,
    ],
)
def test_bad_json_bodies_are_m_not_json(srv: Server, body: bytes) -> None:
    resp = srv.request("POST", "/json", body)
    assert resp.status == 400
    assert _errcode(resp) == "M_NOT_JSON"


def test_deeply_nested_json_is_m_not_json_not_500() -> None:
    srv = Server(max_body_size=1 << 20)
    resp = srv.request("POST", "/json", b"[" * 100_000)
    assert resp.status == 400
    assert _errcode(resp) == "M_NOT_JSON"


def test_empty_body(srv: Server) -> None:
    resp = srv.request("POST", "/json", b"")
    assert resp.status == 400
    assert _errcode(resp) == "M_NOT_JSON"
    resp = srv.request("POST", "/maybe", b"  \r\n ")
    assert resp.status == 200
    assert resp.json() == {"got": {}}
    resp = srv.request("POST", "/maybe")
    assert resp.status == 200


# -- parsing helpers on DummyRequest ------------------------------------------------------


def _dummy(body: bytes | None = None, **args: list[bytes]) -> DummyRequest:
    req = DummyRequest([])
    req.content = io.BytesIO(body) if body is not None else None  # type: ignore[attr-defined]
    req.args = {k.encode(): v for k, v in args.items()}
    return req


def test_parse_json_object_helpers() -> None:
    assert parse_json_object(_dummy(b'{"a":1}')) == {"a": 1}  # type: ignore[arg-type]
    assert parse_json_object(_dummy(None), allow_empty=True) == {}  # type: ignore[arg-type]
    with pytest.raises(MatrixError) as exc:
        parse_json_object(_dummy(None))  # type: ignore[arg-type]
    assert exc.value.errcode == "M_NOT_JSON"


@pytest.mark.parametrize("body", [b'{"a": NaN}', b"[]", b"{", b"\x80"])
def test_parse_json_object_rejects(body: bytes) -> None:
    with pytest.raises(MatrixError) as exc:
        parse_json_object(_dummy(body))  # type: ignore[arg-type]
    assert (exc.value.status, exc.value.errcode) == (400, "M_NOT_JSON")


def test_query_int() -> None:
    req = _dummy(limit=[b"25"], neg=[b"-1"], word=[b"ten"], big=[b"5000"], bad=[b"\xff"])
    assert query_int(req, "limit", 10) == 25  # type: ignore[arg-type]
    assert query_int(req, "missing", 10) == 10  # type: ignore[arg-type]
    assert query_int(req, "big", 10, maximum=100) == 100  # type: ignore[arg-type]
    assert query_int(req, "neg", 0, minimum=-5) == -1  # type: ignore[arg-type]
    for name in ("neg", "word", "bad"):
        with pytest.raises(MatrixError) as exc:
            query_int(req, name, 10)  # type: ignore[arg-type]
        assert (exc.value.status, exc.value.errcode) == (400, "M_INVALID_PARAM"), name


def test_query_arg_takes_first_value() -> None:
    req = _dummy(dir=[b"b", b"f"])
    assert query_arg(req, "dir") == "b"  # type: ignore[arg-type]
    assert query_arg(req, "other") is None  # type: ignore[arg-type]


def test_require_helpers() -> None:
    body: dict[str, Any] = {"s": "x", "n": 1, "o": {}, "none": None}
    assert require_str(body, "s") == "x"
    assert require_str(body, "none", optional=True) is None
    assert require_str(body, "absent", optional=True) is None
    assert require_object(body, "o") == {}
    cases = [
        (lambda: require_str(body, "n"), "M_BAD_JSON"),
        (lambda: require_str(body, "absent"), "M_MISSING_PARAM"),
        (lambda: require_object(body, "s"), "M_BAD_JSON"),
        (lambda: require_object(body, "absent"), "M_MISSING_PARAM"),
    ]
    for call, errcode in cases:
        with pytest.raises(MatrixError) as exc:
            call()
        assert exc.value.errcode == errcode


def test_optional_path_groups_that_do_not_match_are_left_out() -> None:
    router = Router()

    async def handler(request: object, **kwargs: str) -> tuple[int, dict[str, str]]:
        return 200, kwargs

    router.add("PUT", r"/state/(?P<event_type>[^/]+)(?:/(?P<state_key>[^/]*))?", handler)
    route, args, _ = router.match("PUT", "/state/m.room.topic")
    assert route is not None and args == {"event_type": "m.room.topic"}
    route, args, _ = router.match("PUT", "/state/m.room.topic/%40a%3Ab")
    assert args == {"event_type": "m.room.topic", "state_key": "@a:b"}
