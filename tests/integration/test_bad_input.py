"""Bad input against a real single Ganglion process over HTTP (SQLite).

One `ganglion run` per module, from `ganglion generate-config --open-registration`, with
`limits.max_json_body_size` raised to BODY_LIMIT so that a body can carry an event over
the 65,536-byte PDU limit. A second process has registration disabled and a 4096-byte
body limit. Every bad request must get its exact status and errcode, never a 500; after
every test the stored data (a room with messages, and the rooms of its owner) is unchanged
and the server has logged no internal error.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import pytest
import yaml

from tests.harness.ganglion import run_cli
from tests.harness.matrix import CLIENT_V3, MatrixClient, ok, quote, request, request_raw
from tests.harness.single import PASSWORD, SingleServer, single_server

BODY_LIMIT = 98_304  # > 65,536 so an oversized *event* fits in an accepted body
SMALL_BODY_LIMIT = 4096
MAX_PDU = 65_536
SEEDED_TEXTS = ["first message", "héllo wörld — 日本語 🎉", 'third, with "quotes" and \\']


def _body_limit(max_body: int) -> Callable[[dict[str, Any]], None]:
    def tweak(config: dict[str, Any]) -> None:
        config["limits"]["max_json_body_size"] = max_body

    return tweak


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SingleServer]:
    with single_server(tmp_path_factory.mktemp("open"), tweak=_body_limit(BODY_LIMIT)) as srv:
        yield srv


@pytest.fixture(scope="module")
def closed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SingleServer]:
    with single_server(
        tmp_path_factory.mktemp("closed"),
        tweak=_body_limit(SMALL_BODY_LIMIT),
        open_registration=False,
    ) as srv:
        yield srv


@attrs.define
class Seed:
    alice: MatrixClient
    bob: MatrixClient
    room_id: str
    event_ids: list[str]


@pytest.fixture(scope="module")
def seed(server: SingleServer) -> Seed:
    """alice owns a private room with messages; bob exists but is not in it."""
    alice, bob = server.register("alice"), server.register("bob")
    room_id = ok(alice.create_room(name="Seeded", topic="Tópico"))["room_id"]
    event_ids = [ok(alice.send_text(room_id, text))["event_id"] for text in SEEDED_TEXTS]
    return Seed(alice, bob, room_id, event_ids)


def _strip(event: dict[str, Any]) -> dict[str, Any]:
    """An event as served, minus what changes with time (unsigned.age)."""
    out = dict(event)
    unsigned = dict(out.pop("unsigned", {}))
    unsigned.pop("age", None)
    if unsigned:
        out["unsigned"] = unsigned
    return out


def _snapshot(seed: Seed) -> tuple[Any, ...]:
    status, body = seed.alice.call(
        "GET", f"rooms/{quote(seed.room_id)}/messages", params={"dir": "b", "limit": 100}
    )
    assert status == 200, body
    chunk = [_strip(e) for e in body["chunk"]]
    status, sync = seed.alice.sync()
    assert status == 200, sync
    rooms = sorted(sync["rooms"]["join"]) + sorted(sync["rooms"].get("invite", {}))
    return chunk, rooms


@pytest.fixture(autouse=True)
def _unchanged(server: SingleServer, seed: Seed) -> Iterator[tuple[Any, ...]]:
    """After each test: no internal error was logged and the seeded data is as it was."""
    with server.logs_no_new_errors():
        before = _snapshot(seed)
        yield before
    assert _snapshot(seed) == before


def _assert_error(result: tuple[int, Any], status: int, errcode: str) -> None:
    got_status, body = result
    assert (got_status, body.get("errcode") if isinstance(body, dict) else body) == (
        status,
        errcode,
    ), body
    assert isinstance(body.get("error"), str)


# ------------------------------------------------------------- data + seed --


def test_seeded_room_reads_back(seed: Seed, _unchanged: tuple[Any, ...]) -> None:
    chunk, rooms = _unchanged
    assert rooms == [seed.room_id]
    messages = [e for e in chunk if e["type"] == "m.room.message"]
    assert [e["content"]["body"] for e in reversed(messages)] == SEEDED_TEXTS
    assert [e["event_id"] for e in reversed(messages)] == seed.event_ids


# -------------------------------------------------------------- JSON bodies --


@pytest.mark.parametrize(
    "body",
    [
        b"{bad",
        b'{"type": "m.login.password"',
        b"\xff\xfe{}",
        b'{"a": NaN}',
        b'{"a": 1} trailing',
        b"[" * 5000,  # nested too deeply for the parser
        b'{"type":"m.login.password","user":"alice","password":"\\ud800"}',  # lone surrogate
    ],
    ids=["syntax", "truncated", "not-utf8", "nan", "trailing", "deep", "lone-surrogate"],
)
def test_malformed_json_is_m_not_json(server: SingleServer, body: bytes) -> None:
    _assert_error(request("POST", server.url("login"), body), 400, "M_NOT_JSON")


def test_empty_body_where_one_is_required(server: SingleServer) -> None:
    _assert_error(request("POST", server.url("login"), b""), 400, "M_NOT_JSON")


def test_malformed_json_on_authenticated_endpoints(server: SingleServer, seed: Seed) -> None:
    token = seed.alice.access_token
    room = quote(seed.room_id)
    for method, path in [
        ("POST", "createRoom"),
        ("PUT", f"rooms/{room}/send/m.room.message/bad-json-1"),
        ("PUT", f"rooms/{room}/state/m.room.topic/"),
        ("POST", f"rooms/{room}/invite"),
    ]:
        for body in (b"{nope", b'{"body": "\\udfff"}', b"{" * 3000):
            result = request(method, server.url(path), body, access_token=token)
            _assert_error(result, 400, "M_NOT_JSON")


@pytest.mark.parametrize("body", [b"[1, 2]", b'"a string"', b"5", b"null", b"true"])
def test_json_that_is_not_an_object(server: SingleServer, seed: Seed, body: bytes) -> None:
    # Ganglion (like its unit tests) answers M_NOT_JSON for any body that is not an object.
    _assert_error(request("POST", server.url("login"), body), 400, "M_NOT_JSON")
    result = request(
        "PUT",
        server.url(f"rooms/{quote(seed.room_id)}/send/m.room.message/not-object"),
        body,
        access_token=seed.alice.access_token,
    )
    _assert_error(result, 400, "M_NOT_JSON")


def _login_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": "alice"},
        "password": PASSWORD,
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


@pytest.mark.parametrize(
    "body",
    [
        _login_body(password=5),
        _login_body(password=["x"]),
        _login_body(type=5),
        _login_body(identifier="alice"),
        _login_body(identifier={"type": "m.id.user", "user": 7}),
        _login_body(device_id=5),
        _login_body(initial_device_display_name={}),
    ],
    ids=["password-int", "password-list", "type", "identifier", "user", "device", "name"],
)
def test_login_wrong_types(server: SingleServer, body: dict[str, Any]) -> None:
    _assert_error(request("POST", server.url("login"), body), 400, "M_BAD_JSON")


@pytest.mark.parametrize(
    "body",
    [
        {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}},
        {"identifier": {"type": "m.id.user", "user": "alice"}, "password": PASSWORD},
        {"type": "m.login.password", "identifier": {"type": "m.id.user"}, "password": "x"},
        {"type": "m.login.password", "password": PASSWORD},
    ],
    ids=["no-password", "no-type", "no-user-in-identifier", "no-user"],
)
def test_login_missing_fields(server: SingleServer, body: dict[str, Any]) -> None:
    _assert_error(request("POST", server.url("login"), body), 400, "M_MISSING_PARAM")


@pytest.mark.parametrize(
    ("body", "status", "errcode"),
    [
        ({"invite": "x"}, 400, "M_BAD_JSON"),
        ({"invite": [5]}, 400, "M_BAD_JSON"),
        ({"invite": ["not-a-user-id"]}, 400, "M_INVALID_PARAM"),
        ({"name": 5}, 400, "M_BAD_JSON"),
        ({"topic": ["t"]}, 400, "M_BAD_JSON"),
        ({"preset": ["private_chat"]}, 400, "M_INVALID_PARAM"),
        ({"preset": "no_such_preset"}, 400, "M_INVALID_PARAM"),
        ({"visibility": {}}, 400, "M_INVALID_PARAM"),
        ({"creation_content": []}, 400, "M_BAD_JSON"),
        ({"initial_state": {}}, 400, "M_BAD_JSON"),
        ({"initial_state": [{"type": "m.room.topic", "content": "x"}]}, 400, "M_BAD_JSON"),
        (
            {"initial_state": [{"type": "m.room.topic", "state_key": 5, "content": {}}]},
            400,
            "M_BAD_JSON",
        ),
        ({"power_level_content_override": "x"}, 400, "M_BAD_JSON"),
        ({"room_version": "99"}, 400, "M_UNSUPPORTED_ROOM_VERSION"),
        ({"room_version": 12}, 400, "M_UNSUPPORTED_ROOM_VERSION"),
        ({"room_version": ""}, 400, "M_UNSUPPORTED_ROOM_VERSION"),
        # Floats are not canonical JSON, in any of the contents the room is made from.
        ({"creation_content": {"x": 1.5}}, 400, "M_BAD_JSON"),
        ({"power_level_content_override": {"users_default": 0.5}}, 400, "M_BAD_JSON"),
        ({"initial_state": [{"type": "m.room.topic", "content": {"n": 1.5}}]}, 400, "M_BAD_JSON"),
    ],
)
def test_create_room_bad_input_creates_nothing(
    server: SingleServer, seed: Seed, body: dict[str, Any], status: int, errcode: str
) -> None:
    # The autouse check also asserts alice's room list did not grow (no half-made room).
    _assert_error(seed.alice.create_room(**body), status, errcode)


# ----------------------------------------------------- routing and methods --


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", f"{CLIENT_V3}/nonexistent"),
        ("POST", f"{CLIENT_V3}/nonexistent"),
        ("GET", "/"),
        ("GET", "/_matrix/client/v99/sync"),
        ("GET", f"{CLIENT_V3}/rooms/!r:localhost/send/m.room.message/t/extra"),
    ],
)
def test_unknown_endpoint_is_404_unrecognized(server: SingleServer, method: str, path: str) -> None:
    _assert_error(request(method, server.base_url + path, {}), 404, "M_UNRECOGNIZED")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("DELETE", "account/whoami"),
        ("PUT", "login"),
        ("GET", "createRoom"),
        ("POST", "sync"),
        ("POST", "/_matrix/client/versions"),
        ("PUT", "/health"),
    ],
)
def test_known_path_wrong_method_is_405(
    server: SingleServer, seed: Seed, method: str, path: str
) -> None:
    result = request(method, server.url(path), {}, access_token=seed.alice.access_token)
    _assert_error(result, 405, "M_UNRECOGNIZED")


# ---------------------------------------------------------------- body size --


def _padded_login(size: int) -> bytes:
    """A wrong-password login body of exactly `size` bytes."""
    skeleton = json.dumps(_login_body(password="wrong", pad="")).encode()
    body = json.dumps(_login_body(password="wrong", pad="x" * (size - len(skeleton)))).encode()
    assert len(body) == size
    return body


def _chunked_post(url: str, chunks: list[bytes]) -> tuple[int, Any]:
    """POST with Transfer-Encoding: chunked (no Content-Length for the server to check)."""
    parts = urllib.parse.urlsplit(url)
    assert parts.hostname is not None
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.request(
            "POST",
            parts.path,
            body=iter(chunks),
            headers={"Content-Type": "application/json"},
            encode_chunked=True,
        )
        resp = conn.getresponse()
        raw = resp.read()
        return resp.status, json.loads(raw) if raw else None
    finally:
        conn.close()


def test_oversized_body_is_413(server: SingleServer, closed_server: SingleServer) -> None:
    for srv, limit in ((server, BODY_LIMIT), (closed_server, SMALL_BODY_LIMIT)):
        url = srv.url("login")
        # At the limit the body is read and handled (a wrong password), one byte over it is not.
        _assert_error(request("POST", url, _padded_login(limit)), 403, "M_FORBIDDEN")
        _assert_error(request("POST", url, _padded_login(limit + 1)), 413, "M_TOO_LARGE")
        _assert_error(request("POST", url, _padded_login(limit * 4)), 413, "M_TOO_LARGE")
        # Without a Content-Length the limit applies while the body streams in.
        body = _padded_login(limit + 100)
        chunks = [body[i : i + 1000] for i in range(0, len(body), 1000)]
        _assert_error(_chunked_post(url, chunks), 413, "M_TOO_LARGE")
        small = _padded_login(limit - 10)
        _assert_error(_chunked_post(url, [small[:50], small[50:]]), 403, "M_FORBIDDEN")
        assert closed_server.new_errors() == []


def test_oversized_body_on_authenticated_endpoint(server: SingleServer, seed: Seed) -> None:
    body = json.dumps({"msgtype": "m.text", "body": "x" * (BODY_LIMIT + 1)}).encode()
    url = server.url(f"rooms/{quote(seed.room_id)}/send/m.room.message/too-big-body")
    _assert_error(
        request("PUT", url, body, access_token=seed.alice.access_token), 413, "M_TOO_LARGE"
    )


def test_event_over_65536_bytes_is_413(server: SingleServer, seed: Seed) -> None:
    room = quote(seed.room_id)
    token = seed.alice.access_token
    big = {"msgtype": "m.text", "body": "y" * (MAX_PDU + 1)}
    assert len(json.dumps(big)) < BODY_LIMIT  # the body fits, the event does not
    url = server.url(f"rooms/{room}/send/m.room.message/too-big-event")
    status, body = request("PUT", url, big, access_token=token)
    assert (status, body["errcode"]) == (413, "M_TOO_LARGE"), body
    assert "Event too large" in body["error"]
    # Multi-byte text: the limit counts UTF-8 bytes, not characters.
    wide = {"msgtype": "m.text", "body": "日" * (MAX_PDU // 3 + 10)}
    raw = json.dumps(wide, ensure_ascii=False).encode()
    assert len(wide["body"]) < MAX_PDU < len(raw) < BODY_LIMIT
    url = server.url(f"rooms/{room}/send/m.room.message/too-big-event-2")
    status, body = request("PUT", url, raw, access_token=token)
    assert (status, body["errcode"]) == (413, "M_TOO_LARGE"), body
    assert "Event too large" in body["error"]
    url = server.url(f"rooms/{room}/state/m.room.topic/")
    _assert_error(
        request("PUT", url, {"topic": "z" * (MAX_PDU + 1)}, access_token=token),
        413,
        "M_TOO_LARGE",
    )


def test_event_just_under_65536_bytes_is_accepted(server: SingleServer, seed: Seed) -> None:
    bob = seed.bob
    room_id = ok(bob.create_room())["room_id"]
    event_id = ok(bob.send(room_id, {"msgtype": "m.text", "body": "w" * 60_000}))["event_id"]
    status, body = bob.call(
        "GET", f"rooms/{quote(room_id)}/messages", params={"dir": "b", "limit": 1}
    )
    assert status == 200, body
    assert [e["event_id"] for e in body["chunk"]] == [event_id]
    assert body["chunk"][0]["content"]["body"] == "w" * 60_000


# ------------------------------------------------------ sync and /messages --


@pytest.mark.parametrize(
    "since",
    [
        "garbage",
        "s",
        "s-1",
        "s1.5",
        "s1_0_0_0_0_0_0_2",  # more fields than the server knows
        "s" + "9" * 20,
        "s9999999999999999999",  # 19 digits, beyond a BIGINT
        "s1\n",
    ],
)
def test_sync_bad_since(seed: Seed, since: str) -> None:
    status, body = seed.alice.call("GET", "sync", params={"since": since, "timeout": 0})
    assert (status, body["errcode"]) == (400, "M_INVALID_PARAM"), body


def test_sync_since_from_the_future(seed: Seed) -> None:
    status, body = seed.alice.sync()
    assert status == 200, body
    position = int(body["next_batch"][1:])
    # (The server first waits up to 10 s for its stream to catch up: one request only.)
    status, body = seed.alice.call("GET", "sync", params={"since": f"s{position + 1000}"})
    assert (status, body["errcode"]) == (400, "M_INVALID_PARAM"), body


@pytest.mark.parametrize("timeout", ["-1", "-30000", "abc", "1.5", "", "0x10", "1e3"])
def test_sync_bad_timeout(seed: Seed, timeout: str) -> None:
    status, body = seed.alice.call("GET", "sync", params={"timeout": timeout})
    assert (status, body["errcode"]) == (400, "M_INVALID_PARAM"), body


def test_sync_bad_filter(seed: Seed) -> None:
    for raw in ("{not json", '{"room":{"timeline":{"limit":-1}}}'):
        status, body = seed.alice.call("GET", "sync", params={"filter": raw, "timeout": 0})
        assert (status, body["errcode"]) == (400, "M_INVALID_PARAM"), (raw[:20], body)
    deep = '{"a":' + "[" * 3000
    status, body = seed.alice.call("GET", "sync", params={"filter": deep, "timeout": 0})
    assert (status, body["errcode"]) == (400, "M_INVALID_PARAM"), body


@pytest.mark.parametrize(
    "params",
    [
        {"dir": "x"},
        {"dir": "B"},
        {"dir": "forwards"},
        {"dir": "b", "from": "garbage"},
        {"dir": "f", "from": "s9999999999999999999"},
        {"dir": "b", "to": "s9999999999999999999"},
        {"dir": "b", "to": "nope"},
        {"dir": "b", "limit": "-1"},
        {"dir": "b", "limit": "ten"},
    ],
)
def test_messages_bad_params(seed: Seed, params: dict[str, str]) -> None:
    status, body = seed.alice.call("GET", f"rooms/{quote(seed.room_id)}/messages", params=params)
    assert (status, body["errcode"]) == (400, "M_INVALID_PARAM"), body


def test_messages_tokens_at_the_edges_are_served(seed: Seed) -> None:
    path = f"rooms/{quote(seed.room_id)}/messages"
    biggest = "s9223372036854775807"
    status, body = seed.alice.call("GET", path, params={"dir": "b", "from": biggest})
    assert status == 200, body
    assert [e["event_id"] for e in body["chunk"][:3]] == seed.event_ids[::-1]
    status, body = seed.alice.call("GET", path, params={"dir": "f", "from": biggest})
    assert (status, body["chunk"]) == (200, [])


# ----------------------------------------------------------- access tokens --


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "account/whoami"), ("GET", "sync"), ("POST", "createRoom"), ("POST", "logout")],
)
def test_missing_token_is_401(server: SingleServer, method: str, path: str) -> None:
    _assert_error(request(method, server.url(path), {}), 401, "M_MISSING_TOKEN")
    result = request(method, server.url(path), {}, headers={"Authorization": "Basic YTpi"})
    _assert_error(result, 401, "M_MISSING_TOKEN")


def test_unknown_token_is_401(server: SingleServer, seed: Seed) -> None:
    assert seed.alice.access_token is not None
    for token in ("nope", "gan_mfwgsy3f_forged", seed.alice.access_token + "x"):
        _assert_error(
            request("GET", server.url("account/whoami"), access_token=token),
            401,
            "M_UNKNOWN_TOKEN",
        )
    url = server.url("account/whoami") + "?access_token=nope"
    _assert_error(request("GET", url), 401, "M_UNKNOWN_TOKEN")
    room = quote(seed.room_id)
    result = request(
        "PUT", server.url(f"rooms/{room}/send/m.room.message/t"), {"body": "x"},
        access_token="nope",
    )  # fmt: skip
    _assert_error(result, 401, "M_UNKNOWN_TOKEN")


def test_token_is_unknown_after_logout(server: SingleServer) -> None:
    client = MatrixClient(server.base_url)
    ok(client.login("bob", PASSWORD))
    ok(client.whoami())
    ok(client.call("POST", "logout", {}))
    _assert_error(client.whoami(), 401, "M_UNKNOWN_TOKEN")


# ------------------------------------------------------------ registration --


def test_registration_disabled(closed_server: SingleServer) -> None:
    client = MatrixClient(closed_server.base_url)
    _assert_error(client.register("someone"), 403, "M_FORBIDDEN")
    body = {"username": "other", "password": "p", "auth": {"type": "m.login.dummy"}}
    _assert_error(request("POST", closed_server.url("register"), body), 403, "M_FORBIDDEN")
    _assert_error(client.login("someone"), 403, "M_FORBIDDEN")
    assert closed_server.new_errors() == []


def test_duplicate_username(server: SingleServer, seed: Seed) -> None:
    for name in ("alice", "ALICE", "bob"):
        _assert_error(MatrixClient(server.base_url).register(name), 400, "M_USER_IN_USE")
    result = request("GET", server.url("register/available?username=alice"))
    _assert_error(result, 400, "M_USER_IN_USE")
    # The original account is untouched: its password still works.
    ok(MatrixClient(server.base_url).login("alice", PASSWORD))


@pytest.mark.parametrize(
    "username", ["Bad User!", "", "é", "a:b", "@alice", "a" * 300, "tab\there", "nul\u0000"]
)
def test_invalid_username(server: SingleServer, username: str) -> None:
    _assert_error(MatrixClient(server.base_url).register(username), 400, "M_INVALID_USERNAME")


def test_register_wrong_types(server: SingleServer) -> None:
    base = {"password": "p", "auth": {"type": "m.login.dummy"}}
    for extra in ({"username": 5}, {"username": "ok1", "inhibit_login": "yes"},
                  {"username": "ok2", "device_id": []}):  # fmt: skip
        body = {**base, **extra}
        _assert_error(request("POST", server.url("register"), body), 400, "M_BAD_JSON")
    status, _ = MatrixClient(server.base_url).login("ok1", "p")
    assert status == 403  # nothing was registered


@pytest.mark.parametrize(
    ("user", "password"),
    [("alice", "wrong"), ("alice", ""), ("nobody", PASSWORD), ("@alice:elsewhere", PASSWORD)],
)
def test_wrong_password_is_403(server: SingleServer, seed: Seed, user: str, password: str) -> None:
    _assert_error(MatrixClient(server.base_url).login(user, password), 403, "M_FORBIDDEN")


# ------------------------------------------------------------------- rooms --


def test_send_to_unknown_room_is_404(seed: Seed) -> None:
    for room_id in ("!nope:localhost", "!" + "A" * 43, "not-a-room"):
        _assert_error(seed.alice.send_text(room_id, "hello?"), 404, "M_NOT_FOUND")
        _assert_error(
            seed.alice.call("PUT", f"rooms/{quote(room_id)}/state/m.room.topic/", {"topic": "t"}),
            404,
            "M_NOT_FOUND",
        )
    _assert_error(seed.alice.join("!nope:localhost"), 404, "M_NOT_FOUND")


def test_room_you_are_not_in_is_403(seed: Seed) -> None:
    bob, room = seed.bob, seed.room_id
    _assert_error(bob.send_text(room, "let me in"), 403, "M_FORBIDDEN")
    _assert_error(
        bob.call("PUT", f"rooms/{quote(room)}/state/m.room.topic/", {"topic": "mine"}),
        403,
        "M_FORBIDDEN",
    )
    _assert_error(bob.join(room), 403, "M_FORBIDDEN")  # invite-only
    _assert_error(
        bob.call("GET", f"rooms/{quote(room)}/messages", params={"dir": "b"}),
        403,
        "M_FORBIDDEN",
    )


def test_bad_event_content_is_rejected(seed: Seed) -> None:
    room = seed.room_id
    for content in ({"body": 1.5}, {"body": 2**60}, {"n": {"deep": [0.1]}}):
        _assert_error(seed.alice.send(room, content), 400, "M_BAD_JSON")
    # An over-long event type or state key (more than 255 bytes).
    _assert_error(seed.alice.send(room, {"body": "x"}, event_type="t" * 300), 413, "M_TOO_LARGE")


# ---------------------------------------------------- admin registration --


def _shared_secret(server: SingleServer) -> str:
    secret = yaml.safe_load(server.config_path.read_text())["registration_shared_secret"]
    assert isinstance(secret, str) and secret
    return secret


def _mac(secret: str, nonce: str, user: str, password: str, admin: bool) -> str:
    message = "\x00".join([nonce, user, password, "admin" if admin else "notadmin"])
    return hmac.new(secret.encode(), message.encode(), hashlib.sha1).hexdigest()


def test_shared_secret_registration(server: SingleServer) -> None:
    url = server.url("/_synapse/admin/v1/register")
    secret = _shared_secret(server)

    def nonce() -> str:
        status, body = request("GET", url)
        assert status == 200, body
        assert isinstance(body["nonce"], str) and body["nonce"]
        return str(body["nonce"])

    n = nonce()
    good = {
        "nonce": n, "username": "dave", "password": "dave pw", "admin": False,
        "mac": _mac(secret, n, "dave", "dave pw", False),
    }  # fmt: skip
    status, body = request("POST", url, good)
    assert status == 200, body
    assert body["user_id"] == "@dave:localhost"
    assert isinstance(body["access_token"], str)
    ok(MatrixClient(server.base_url, access_token=body["access_token"]).whoami())
    ok(MatrixClient(server.base_url).login("dave", "dave pw"))

    # The same nonce again, even with a correct MAC: 400.
    again = {**good, "username": "dave2", "mac": _mac(secret, n, "dave2", "dave pw", False)}
    _assert_error(request("POST", url, again), 400, "M_UNKNOWN")
    # A nonce the server never issued: 400.
    fake = {**again, "nonce": "0" * 64, "mac": _mac(secret, "0" * 64, "dave2", "dave pw", False)}
    _assert_error(request("POST", url, fake), 400, "M_UNKNOWN")

    # A bad MAC: 403, and nothing is created; the nonce is spent all the same.
    bad_nonce = nonce()
    bad: dict[str, Any] = {
        "nonce": bad_nonce, "username": "erin", "password": "erin pw", "admin": False,
        "mac": _mac("wrong secret", bad_nonce, "erin", "erin pw", False),
    }  # fmt: skip
    _assert_error(request("POST", url, bad), 403, "M_FORBIDDEN")
    # A MAC for notadmin does not authorise admin.
    n = nonce()
    escalate = {**bad, "nonce": n, "admin": True, "mac": _mac(secret, n, "erin", "erin pw", False)}
    _assert_error(request("POST", url, escalate), 403, "M_FORBIDDEN")
    status, _ = MatrixClient(server.base_url).login("erin", "erin pw")
    assert status == 403
    fixed = {**bad, "mac": _mac(secret, bad_nonce, "erin", "erin pw", False)}
    _assert_error(request("POST", url, fixed), 400, "M_UNKNOWN")

    # Wrong types and malformed bodies.
    n = nonce()
    _assert_error(request("POST", url, {**good, "nonce": n, "username": 5}), 400, "M_INVALID_PARAM")
    _assert_error(request("POST", url, b"{oops"), 400, "M_NOT_JSON")


def test_register_user_cli(server: SingleServer) -> None:
    result = run_cli(
        "register-user", "-c", server.config_path, "--user", "frank", "--password", "frank pw"
    )
    assert "@frank:localhost" in result.stdout
    client = MatrixClient(server.base_url)
    ok(client.login("frank", "frank pw"))
    assert client.user_id == "@frank:localhost"
    _assert_error(MatrixClient(server.base_url).login("frank", "nope"), 403, "M_FORBIDDEN")
    # Registering the same user again fails cleanly with the server's errcode.
    again = run_cli(
        "register-user", "-c", server.config_path, "--user", "frank", "--password", "x",
        check=False,
    )  # fmt: skip
    assert again.returncode != 0
    assert "M_USER_IN_USE" in again.stderr + again.stdout


# -------------------------------------------------------------------- CORS --


def test_cors_headers_on_responses(server: SingleServer, seed: Seed) -> None:
    origin = {"Origin": "https://app.example"}
    for method, path, token in [
        ("GET", "/_matrix/client/versions", None),
        ("GET", "account/whoami", seed.alice.access_token),
        ("GET", "account/whoami", None),  # an error response carries them too
        ("GET", "nonexistent", None),
    ]:
        status, headers, _ = request_raw(
            method, server.url(path), access_token=token, headers=origin
        )
        assert status in (200, 401, 404)
        assert headers.get("access-control-allow-origin") == "*", (path, headers)
        assert "Authorization" in headers.get("access-control-allow-headers", "")


def test_cors_preflight(server: SingleServer) -> None:
    status, headers, _ = request_raw(
        "OPTIONS",
        server.url("login"),
        headers={
            "Origin": "https://app.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "Authorization, Content-Type",
        },
    )
    assert status == 200
    assert headers.get("access-control-allow-origin") == "*"
    methods = {m.strip() for m in headers.get("access-control-allow-methods", "").split(",")}
    assert {"GET", "POST", "PUT", "DELETE", "OPTIONS"} <= methods
    allowed = {
        h.strip().lower() for h in headers.get("access-control-allow-headers", "").split(",")
    }
    assert {"authorization", "content-type"} <= allowed
    # A preflight for a path that needs a token does not need one itself.
    status, headers, _ = request_raw("OPTIONS", server.url("sync"))
    assert status == 200
    assert headers.get("access-control-allow-origin") == "*"
