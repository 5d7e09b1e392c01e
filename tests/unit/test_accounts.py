"""Access tokens (format, routing key, extraction from requests) and the account handler."""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet import defer
from twisted.web.test.requesthelper import DummyRequest

from homeserver.handlers import accounts as accounts_module
from homeserver.handlers.accounts import NONCE_LIFETIME_MS, AccountHandler, make_access_token
from homeserver.handlers.auth import Authenticator, Requester, access_token_from
from homeserver.http.errors import MatrixError
from storage.stores.accounts import AccountStore, TokenInfo
from workers.routing import (
    localpart_for_user_key,
    request_user_key,
    token_user_key,
    user_key_for_localpart,
)

T = TypeVar("T")

SECRET = "s3cret"
LOCALPARTS = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789._=-/+", min_size=1, max_size=40)


def _result(d: defer.Deferred[T]) -> T:
    """The result of an already-fired Deferred (raising its failure)."""
    results: list[T] = []
    failures: list[Any] = []
    d.addCallbacks(results.append, failures.append)
    if failures:
        failures[0].raiseException()
    assert results, "Deferred has not fired"
    return results[0]


def _run(coro: Any) -> Any:
    return _result(defer.ensureDeferred(coro))


# -- access token format and the routing key ----------------------------------------------


def test_token_format() -> None:
    token = make_access_token("alice")
    m = re.fullmatch(r"gan_([a-z2-7]+)_([A-Za-z0-9_\-]+)", token)
    assert m is not None, token
    assert m.group(1) == "mfwgsy3f"  # base32("alice"), lowercase, unpadded
    assert len(m.group(2)) >= 32  # 24 random bytes


def test_tokens_are_unique() -> None:
    tokens = {make_access_token("alice") for _ in range(50)}
    assert len(tokens) == 50


def test_same_user_same_key_different_users_different_keys() -> None:
    a1, a2 = make_access_token("alice"), make_access_token("alice")
    b = make_access_token("bob")
    assert a1 != a2
    assert token_user_key(a1) == token_user_key(a2) == user_key_for_localpart("alice")
    assert token_user_key(b) == user_key_for_localpart("bob")
    assert token_user_key(a1) != token_user_key(b)


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])  # busy CI machines
@given(LOCALPARTS, LOCALPARTS)
def test_routing_key_property(x: str, y: str) -> None:
    tx1, tx2, ty = make_access_token(x), make_access_token(x), make_access_token(y)
    kx = token_user_key(tx1)
    assert kx is not None
    assert kx == token_user_key(tx2)
    assert localpart_for_user_key(kx) == x
    assert (token_user_key(ty) == kx) == (x == y)
    # As nginx sees it in a header or the query string.
    assert request_user_key(f"Bearer {tx1}", None) == kx
    assert request_user_key(None, tx1) == kx


def test_issued_session_token_carries_the_users_key(handler_env: Any) -> None:
    handler, store = handler_env
    result = _run(handler.register("Carol", None))
    assert result["user_id"] == "@carol:hs"
    assert token_user_key(result["access_token"]) == user_key_for_localpart("carol")
    assert store.sessions[result["access_token"]] == ("@carol:hs", result["device_id"])


# -- access_token_from --------------------------------------------------------------------


def _req(header: str | None = None, query: list[bytes] | None = None) -> DummyRequest:
    req = DummyRequest([])
    if header is not None:
        req.requestHeaders.addRawHeader(b"Authorization", header.encode("latin-1"))
    if query is not None:
        req.args = {b"access_token": query}
    return req


@pytest.mark.parametrize(
    ("header", "want"),
    [
        ("Bearer abc", "abc"),
        ("bearer abc", "abc"),
        ("BEARER abc", "abc"),
        ("Bearer   abc  ", "abc"),
        ("Bearer gan_mfwgsy3f_x-y_z", "gan_mfwgsy3f_x-y_z"),
    ],
)
def test_token_from_header(header: str, want: str) -> None:
    assert access_token_from(_req(header)) == want  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "header", ["Basic dXNlcjpwdw==", "Bearer", "Bearer    ", "abc", "Token abc"]
)
def test_bad_authorization_header_is_401(header: str) -> None:
    with pytest.raises(MatrixError) as exc:
        access_token_from(_req(header))  # type: ignore[arg-type]
    assert (exc.value.status, exc.value.errcode) == (401, "M_MISSING_TOKEN")


def test_token_from_query() -> None:
    assert access_token_from(_req(query=[b"qtok", b"other"])) == "qtok"  # type: ignore[arg-type]


def test_header_wins_over_query() -> None:
    req = _req("Bearer htok", [b"qtok"])
    assert access_token_from(req) == "htok"  # type: ignore[arg-type]


def test_no_token() -> None:
    assert access_token_from(_req()) is None  # type: ignore[arg-type]
    assert access_token_from(_req(query=[])) is None  # type: ignore[arg-type]


def test_non_utf8_query_token_does_not_raise() -> None:
    token = access_token_from(_req(query=[b"\xff\xfe"]))  # type: ignore[arg-type]
    assert isinstance(token, str)


# -- a fake account store and the handler -------------------------------------------------


class FakeAccountStore(AccountStore):
    def __init__(self) -> None:  # no database
        self.users: dict[str, tuple[str | None, bool, bool]] = {}
        self.sessions: dict[str, tuple[str, str]] = {}

    async def get_user(self, user_id: str) -> tuple[str | None, bool, bool] | None:
        return self.users.get(user_id)

    async def get_token(self, token: str) -> TokenInfo | None:
        s = self.sessions.get(token)
        return TokenInfo(s[0], s[1], token) if s else None

    async def create_user(
        self, user_id: str, password_hash: str | None, now_ms: int, admin: bool = False
    ) -> bool:
        if user_id in self.users:
            return False
        self.users[user_id] = (password_hash, admin, False)
        return True

    async def create_session(
        self, user_id: str, device_id: str, token: str, display_name: str | None, now_ms: int
    ) -> None:
        self.sessions[token] = (user_id, device_id)

    async def delete_token(self, token: str) -> None:
        self.sessions.pop(token, None)


class FakeClock:
    def __init__(self) -> None:
        self.ms = 1_000_000

    def __call__(self) -> int:
        return self.ms


def _sync_to_thread(f: Callable[..., T], *args: Any, **kwargs: Any) -> defer.Deferred[T]:
    return defer.maybeDeferred(f, *args, **kwargs)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def handler_env(
    monkeypatch: pytest.MonkeyPatch, clock: FakeClock
) -> tuple[AccountHandler, FakeAccountStore]:
    # bcrypt runs inline instead of in the reactor's thread pool (no reactor runs here).
    monkeypatch.setattr(accounts_module, "threads", SimpleNamespace(deferToThread=_sync_to_thread))
    store = FakeAccountStore()
    handler = AccountHandler(
        "hs",
        store,
        clock,
        enable_registration=False,
        registration_shared_secret=SECRET,
        bcrypt_rounds=4,
    )
    return handler, store


def _mac(nonce: str, user: str, password: str, admin: bool, user_type: str | None = None) -> str:
    parts = [nonce, user, password, "admin" if admin else "notadmin"]
    if user_type is not None:
        parts.append(user_type)
    return hmac.new(SECRET.encode(), "\x00".join(parts).encode(), hashlib.sha1).hexdigest()


def _body(
    handler: AccountHandler, user: str = "admin1", admin: bool = False, **kw: Any
) -> dict[str, Any]:
    nonce = handler.new_nonce()
    body: dict[str, Any] = {
        "nonce": nonce,
        "username": user,
        "password": "pw",
        "admin": admin,
        "mac": _mac(nonce, user, "pw", admin, kw.get("user_type")),
    }
    body.update(kw)
    return body


def _error(coro: Any) -> MatrixError:
    with pytest.raises(MatrixError) as exc:
        _run(coro)
    return exc.value


def test_admin_register_with_valid_hmac(handler_env: Any) -> None:
    handler, store = handler_env
    result = _run(handler.admin_register(_body(handler, displayname="Admin One")))
    assert result["user_id"] == "@admin1:hs"
    assert result["access_token"].startswith("gan_")
    pw_hash, admin, deactivated = store.users["@admin1:hs"]
    assert (admin, deactivated) == (False, False)
    assert pw_hash is not None and pw_hash.startswith("$2")


def test_admin_register_admin_flag_is_covered_by_hmac(handler_env: Any) -> None:
    handler, store = handler_env
    _run(handler.admin_register(_body(handler, "boss", admin=True)))
    assert store.users["@boss:hs"][1] is True
    # Flipping admin without recomputing the MAC fails.
    body = _body(handler, "sneaky", admin=False)
    body["admin"] = True
    assert _error(handler.admin_register(body)).errcode == "M_FORBIDDEN"
    assert "@sneaky:hs" not in store.users


def test_admin_register_with_user_type(handler_env: Any) -> None:
    handler, store = handler_env
    _run(handler.admin_register(_body(handler, "bot", user_type="bot")))
    assert "@bot:hs" in store.users
    body = _body(handler, "bot2", user_type="bot")
    body["user_type"] = "support"
    assert _error(handler.admin_register(body)).errcode == "M_FORBIDDEN"


def test_admin_register_uppercase_mac_is_accepted(handler_env: Any) -> None:
    handler, store = handler_env
    body = _body(handler)
    body["mac"] = body["mac"].upper()
    _run(handler.admin_register(body))
    assert "@admin1:hs" in store.users


@pytest.mark.parametrize("mac", ["0" * 40, "", "not hex", "é" * 40, "\u2603"])
def test_admin_register_wrong_mac_is_403(handler_env: Any, mac: str) -> None:
    handler, store = handler_env
    body = _body(handler)
    body["mac"] = mac
    err = _error(handler.admin_register(body))
    assert (err.status, err.errcode) == (403, "M_FORBIDDEN")
    assert store.users == {}


def test_nonce_is_single_use(handler_env: Any) -> None:
    handler, store = handler_env
    body = _body(handler)
    wrong = dict(body, mac="0" * 40)
    assert _error(handler.admin_register(wrong)).status == 403
    # The failed attempt used the nonce up: even the right MAC fails now.
    err = _error(handler.admin_register(body))
    assert (err.status, err.errcode) == (400, "M_UNKNOWN")
    assert store.users == {}


def test_nonce_replay_after_success_fails(handler_env: Any) -> None:
    handler, _ = handler_env
    body = _body(handler)
    _run(handler.admin_register(body))
    assert _error(handler.admin_register(body)).errcode == "M_UNKNOWN"


def test_unknown_nonce(handler_env: Any) -> None:
    handler, _ = handler_env
    nonce = "f" * 64
    body = {"nonce": nonce, "username": "u", "password": "pw", "mac": _mac(nonce, "u", "pw", False)}
    err = _error(handler.admin_register(body))
    assert (err.status, err.errcode) == (400, "M_UNKNOWN")


def test_expired_nonce(handler_env: Any, clock: FakeClock) -> None:
    handler, store = handler_env
    fresh = _body(handler, "fresh")
    stale = _body(handler, "stale")
    clock.ms += NONCE_LIFETIME_MS - 1
    _run(handler.admin_register(fresh))
    clock.ms += 1
    assert _error(handler.admin_register(stale)).errcode == "M_UNKNOWN"
    assert "@stale:hs" not in store.users


def test_old_nonces_are_pruned(handler_env: Any, clock: FakeClock) -> None:
    handler, _ = handler_env
    for _ in range(5):
        handler.new_nonce()
    clock.ms += NONCE_LIFETIME_MS
    handler.new_nonce()
    assert len(handler._nonces) == 1


@pytest.mark.parametrize(
    "change",
    [
        {"nonce": 1},
        {"username": None},
        {"password": ["pw"]},
        {"mac": 5},
        {"admin": "yes"},
        {"admin": 1},
    ],
)
def test_admin_register_bad_types(handler_env: Any, change: dict[str, Any]) -> None:
    handler, _ = handler_env
    body = _body(handler)
    body.update(change)
    err = _error(handler.admin_register(body))
    assert (err.status, err.errcode) == (400, "M_INVALID_PARAM")


def test_admin_register_disabled_without_secret(handler_env: Any) -> None:
    handler, store = handler_env
    body = _body(handler)
    handler.registration_shared_secret = None
    err = _error(handler.admin_register(body))
    assert (err.status, err.errcode) == (400, "M_UNKNOWN")
    assert store.users == {}


def test_admin_register_taken_user(handler_env: Any) -> None:
    handler, _ = handler_env
    _run(handler.admin_register(_body(handler, "dup")))
    assert _error(handler.admin_register(_body(handler, "dup"))).errcode == "M_USER_IN_USE"


def test_admin_register_invalid_username(handler_env: Any) -> None:
    handler, _ = handler_env
    err = _error(handler.admin_register(_body(handler, "bad user")))
    assert err.errcode == "M_INVALID_USERNAME"


def test_login_and_logout(handler_env: Any) -> None:
    handler, store = handler_env
    _run(handler.register("dave", "hunter2", inhibit_login=True))
    assert store.sessions == {}
    assert _error(handler.login("dave", "wrong", None, None)).errcode == "M_FORBIDDEN"
    assert _error(handler.login("nobody", "hunter2", None, None)).errcode == "M_FORBIDDEN"
    session = _run(handler.login("@dave:hs", "hunter2", "DEV", None))
    assert session["user_id"] == "@dave:hs"
    assert session["device_id"] == "DEV"
    assert token_user_key(session["access_token"]) == user_key_for_localpart("dave")
    _run(handler.logout(session["access_token"]))
    assert store.sessions == {}


def test_authenticator(handler_env: Any) -> None:
    handler, store = handler_env
    auth = Authenticator(store)
    result = _run(handler.register("erin", None))
    token = result["access_token"]
    requester = _run(auth.get_requester(_req(f"Bearer {token}")))  # type: ignore[arg-type]
    assert requester == Requester("@erin:hs", result["device_id"], token)
    err = _error(auth.get_requester(_req("Bearer gan_x_unknown")))  # type: ignore[arg-type]
    assert (err.status, err.errcode) == (401, "M_UNKNOWN_TOKEN")
    assert err.to_json()["soft_logout"] is False
    err = _error(auth.get_requester(_req()))  # type: ignore[arg-type]
    assert (err.status, err.errcode) == (401, "M_MISSING_TOKEN")
