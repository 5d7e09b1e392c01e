"""ReplicationServer: forwarded write operations answer with the positions they moved."""

from __future__ import annotations

import io
import json
from typing import Any

from twisted.internet import defer
from twisted.web.test.requesthelper import DummyRequest

from replication.http import ReplicationServer

SECRET = "s3cret"


def _call(server: ReplicationServer, name: str, args: dict[str, Any]) -> Any:
    request = DummyRequest([b""])
    request.method = b"POST"
    request.requestHeaders.setRawHeaders(b"Authorization", [f"Bearer {SECRET}".encode()])
    request.content = io.BytesIO(json.dumps(args).encode())  # type: ignore[attr-defined]
    out: list[Any] = []
    defer.ensureDeferred(server._on_call(request, name)).addBoth(out.append)  # type: ignore[arg-type]
    assert out, "operation did not finish"
    return out[0]


def test_a_write_answers_only_the_positions_it_moved() -> None:
    positions = {"events": 10, "typing": 4, "presence": 7}
    server = ReplicationServer(SECRET, lambda: dict(positions))

    async def set_typing(args: dict[str, Any]) -> dict[str, Any]:
        positions["typing"] += 1
        return {"ok": args["x"]}

    async def no_op(args: dict[str, Any]) -> dict[str, Any]:
        return {}

    server.register("set_typing", set_typing)
    server.register("no_op", no_op)
    # The caller waits for these only; an unmoved stream costs it nothing.
    assert _call(server, "set_typing", {"x": 1}) == (
        200,
        {"result": {"ok": 1}, "positions": {"typing": 5}},
    )
    assert _call(server, "no_op", {}) == (200, {"result": {}, "positions": {}})
