"""Raw HTTP helpers for tests that need exact status codes: every call returns (status, json).

`json` is the decoded body, or None when the body is empty or not JSON (the raw
text is then available via `request_raw`).
"""

from __future__ import annotations

import http.client
import json
import urllib.parse
import uuid
from collections.abc import Mapping
from typing import Any

CLIENT_V3 = "/_matrix/client/v3"

Response = tuple[int, Any]


def request_raw(
    method: str,
    url: str,
    body: Any = None,
    *,
    access_token: str | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 30.0,
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP request; returns (status, headers, body bytes). Never raises on 4xx/5xx.

    `body` may be bytes (sent as is) or any JSON-serialisable value.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"only http:// URLs are supported, got {url!r}")
    conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout)
    hdrs = {"Accept": "application/json", **(headers or {})}
    data: bytes | None = None
    if isinstance(body, bytes):
        data = body
    elif body is not None:
        data = json.dumps(body).encode()
        hdrs.setdefault("Content-Type", "application/json")
    if access_token is not None:
        hdrs["Authorization"] = f"Bearer {access_token}"
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    try:
        conn.request(method, path, body=data, headers=hdrs)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def request(
    method: str,
    url: str,
    body: Any = None,
    *,
    access_token: str | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 30.0,
) -> Response:
    """One HTTP request; returns (status, decoded JSON body or None)."""
    status, _, raw = request_raw(
        method, url, body, access_token=access_token, headers=headers, timeout=timeout
    )
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, None


def ok(result: Response) -> Any:
    """The body of a 200 response; any other status fails the test, showing the body."""
    status, body = result
    assert status == 200, body
    return body


def quote(value: str) -> str:
    """Percent-encode a path segment (room IDs, event types, user IDs)."""
    return urllib.parse.quote(value, safe="")


class MatrixClient:
    """A tiny client-server API client bound to `base_url` (e.g. the nginx proxy).

    Methods return (status, json) and never raise on error statuses, so tests can
    assert exact codes. A successful `register`/`login` stores the access token.
    """

    def __init__(self, base_url: str, access_token: str | None = None, timeout: float = 30.0):
        self.base_url = base_url.rstrip("/")
        self.access_token = access_token
        self.user_id: str | None = None
        self.device_id: str | None = None
        self.timeout = timeout

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        params: Mapping[str, Any] | None = None,
        authed: bool = True,
        timeout: float | None = None,
    ) -> Response:
        """`path` is relative to /_matrix/client/v3 unless it starts with /_matrix or /."""
        if not path.startswith("/"):
            path = f"{CLIENT_V3}/{path}"
        url = self.base_url + path
        if params:
            url += "?" + urllib.parse.urlencode(
                {k: json.dumps(v) if isinstance(v, dict) else v for k, v in params.items()}
            )
        return request(
            method,
            url,
            body,
            access_token=self.access_token if authed else None,
            timeout=self.timeout if timeout is None else timeout,
        )

    def _remember(self, result: Response) -> Response:
        status, body = result
        if status == 200 and isinstance(body, dict) and "access_token" in body:
            self.access_token = body["access_token"]
            self.user_id = body.get("user_id")
            self.device_id = body.get("device_id")
        return result

    def register(self, username: str, password: str = "correct horse battery") -> Response:
        """Register with the dummy auth flow (one retry with the server's session)."""
        body: dict[str, Any] = {
            "username": username,
            "password": password,
            "auth": {"type": "m.login.dummy"},
        }
        status, resp = self.call("POST", "register", body, authed=False)
        if status == 401 and isinstance(resp, dict) and "session" in resp:
            body["auth"]["session"] = resp["session"]
            status, resp = self.call("POST", "register", body, authed=False)
        return self._remember((status, resp))

    def login(self, username: str, password: str = "correct horse battery") -> Response:
        body = {
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": username},
            "password": password,
        }
        return self._remember(self.call("POST", "login", body, authed=False))

    def create_room(self, **content: Any) -> Response:
        return self.call("POST", "createRoom", content)

    def join(self, room_id_or_alias: str) -> Response:
        return self.call("POST", f"join/{quote(room_id_or_alias)}", {})

    def send(
        self,
        room_id: str,
        content: Mapping[str, Any],
        event_type: str = "m.room.message",
        txn_id: str | None = None,
    ) -> Response:
        txn = txn_id or uuid.uuid4().hex
        return self.call(
            "PUT", f"rooms/{quote(room_id)}/send/{quote(event_type)}/{quote(txn)}", content
        )

    def send_text(self, room_id: str, text: str) -> Response:
        return self.send(room_id, {"msgtype": "m.text", "body": text})

    def sync(
        self,
        since: str | None = None,
        timeout_ms: int = 0,
        filter: str | Mapping[str, Any] | None = None,
    ) -> Response:
        params: dict[str, Any] = {"timeout": timeout_ms}
        if since is not None:
            params["since"] = since
        if filter is not None:
            params["filter"] = filter if isinstance(filter, str) else json.dumps(filter)
        return self.call("GET", "sync", params=params, timeout=self.timeout + timeout_ms / 1000)

    def whoami(self) -> Response:
        return self.call("GET", "account/whoami")

    def versions(self) -> Response:
        return self.call("GET", "/_matrix/client/versions", authed=False)
