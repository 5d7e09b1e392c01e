"""The routing table and the access-token user key that nginx hashes on."""

from __future__ import annotations

import re

import pytest

from workers.routing import (
    AUTH_HEADER_USER_KEY_RE,
    ROUTES,
    Route,
    localpart_for_user_key,
    make_access_token,
    request_user_key,
    route_for_path,
    routes_for,
    token_user_key,
    user_key_for_localpart,
    worker_type_for_path,
)


@pytest.mark.parametrize(
    ("path", "worker_type"),
    [
        ("/_matrix/client/v3/sync", "sync"),
        ("/_matrix/client/r0/sync", "sync"),
        ("/_matrix/client/unstable/sync", "sync"),
        ("/_matrix/client/v3/sync/extra", "main"),
        ("/_matrix/client/v4/sync", "main"),
        ("/_matrix/client/v3/rooms/!a:b/messages", "client_reader"),
        ("/_matrix/client/v3/rooms/!a:b/context/$e", "client_reader"),
        ("/_matrix/client/v1/rooms/!a:b/relations/$e", "client_reader"),
        ("/_matrix/client/v3/rooms/!a:b/state/m.room.name/", "client_reader"),
        ("/_matrix/client/v3/rooms/!a:b/send/m.room.message/t", "main"),
        ("/_matrix/client/v3/rooms/!a:b/statefoo", "main"),
        ("/_matrix/client/v3/joined_rooms", "client_reader"),
        ("/_matrix/client/versions", "client_reader"),
        ("/", "main"),
    ],
)
def test_worker_type_for_path(path: str, worker_type: str) -> None:
    assert worker_type_for_path(path) == worker_type


def test_sync_route_is_sticky_by_user() -> None:
    route = route_for_path("/_matrix/client/v3/sync")
    assert route is not None
    assert route.sticky == "user" and route.streaming
    assert routes_for("sync") == (route,)
    assert routes_for("main") == ()
    assert all(isinstance(r, Route) for r in ROUTES)


def test_route_validation() -> None:
    with pytest.raises(ValueError):
        Route("^/x$", "media")
    with pytest.raises(ValueError):
        Route("^/x$", "sync", sticky="device")  # type: ignore[arg-type]


@pytest.mark.parametrize("localpart", ["alice", "a", "bob.smith", "user_with_underscores", "ünï"])
def test_user_key_round_trip(localpart: str) -> None:
    key = user_key_for_localpart(localpart)
    assert re.fullmatch(r"[a-z2-7]+", key)
    assert localpart_for_user_key(key) == localpart
    token = make_access_token(localpart)
    assert token.startswith(f"gan_{key}_")
    assert token_user_key(token) == key


def test_same_user_same_key_different_tokens() -> None:
    tokens = {make_access_token("alice") for _ in range(5)}
    assert len(tokens) == 5
    assert {token_user_key(t) for t in tokens} == {user_key_for_localpart("alice")}
    assert token_user_key(make_access_token("bob")) != user_key_for_localpart("alice")


def test_random_part_may_contain_underscores() -> None:
    token = make_access_token("alice", "a_b_c")
    assert token_user_key(token) == user_key_for_localpart("alice")


@pytest.mark.parametrize(
    "token", ["", "syt_abc_def", "gan_", "gan_abc", "gan__x", "gan_ABC_x", "gan_ab1_x", "xgan_a_b"]
)
def test_token_without_user_key(token: str) -> None:
    assert token_user_key(token) is None


def test_request_user_key_header_then_query() -> None:
    alice, bob = make_access_token("alice"), make_access_token("bob")
    ka, kb = user_key_for_localpart("alice"), user_key_for_localpart("bob")
    assert request_user_key(f"Bearer {alice}", None) == ka
    assert request_user_key(f"bearer {alice}", None) == ka
    assert request_user_key(f"BEARER  {alice}", None) == ka
    assert request_user_key(None, bob) == kb
    assert request_user_key(f"Bearer {alice}", bob) == ka  # the header wins
    assert request_user_key("Bearer opaque", bob) == kb  # unless it has no key
    assert request_user_key(f"Basic {alice}", None) == ""
    assert request_user_key(None, None) == ""


def test_header_regex_is_nginx_compatible() -> None:
    # Only constructs PCRE and Python share: inline scoped flag, classes, groups.
    assert "(?P" not in AUTH_HEADER_USER_KEY_RE
    assert re.compile(AUTH_HEADER_USER_KEY_RE).groups == 1
