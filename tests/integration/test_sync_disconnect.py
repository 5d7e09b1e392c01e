"""A client that hangs up on a long-polling /sync frees its listener at once, instead of
holding it until the timeout."""

from __future__ import annotations

import socket
import urllib.parse

from tests.harness.matrix import ok
from tests.harness.single import SingleServer
from tests.harness.waiting import wait_until


def _waiting(single: SingleServer) -> float:
    return single.metrics().first("ganglion_sync_waiting_listeners") or 0.0


def test_a_dropped_long_poll_frees_its_listener(single: SingleServer) -> None:
    alice = single.new_user("alice")
    since = ok(alice.call("GET", "sync", params={"timeout": "0"}))["next_batch"]
    assert _waiting(single) == 0
    url = urllib.parse.urlsplit(single.base_url)
    conn = socket.create_connection((url.hostname, url.port), timeout=10)
    try:
        conn.sendall(
            f"GET /_matrix/client/v3/sync?timeout=120000&since={since} HTTP/1.1\r\n"
            f"Host: {url.hostname}\r\nAuthorization: Bearer {alice.access_token}\r\n\r\n".encode()
        )
        single.wait_for_waiting_listeners(1)
    finally:
        conn.close()
    # Well inside the 120 s the long-poll asked for.
    wait_until(lambda: _waiting(single) == 0, 10, description="the listener is released")
    assert single.new_errors() == []
    # The server still answers the same user normally.
    assert ok(alice.call("GET", "sync", params={"timeout": "0", "since": since}))
