"""nginx from `render_nginx` really routes: a live proxy in front of stand-in backends.

Three tiny HTTP servers stand in for main and two sync workers; each answers with
its own name. nginx runs the generated full config in the foreground on free
127.0.0.1 ports.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import threading
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import attrs
import pytest

from tests.harness.ports import free_port, port_is_open
from tests.harness.services import nginx_binary, require_service
from tests.harness.waiting import wait_until
from tests.unit.deploy.deploy_configs import make_config
from workers.deploy.nginx import render_nginx
from workers.routing import make_access_token, request_user_key, user_key_for_localpart

pytestmark = [pytest.mark.nginx, pytest.mark.timeout(120)]


class _Backend(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, name: str) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.name = name
        self.hits = 0
        self.lock = threading.Lock()


class _Handler(BaseHTTPRequestHandler):
    server: _Backend
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        with self.server.lock:
            self.server.hits += 1
        body = json.dumps(
            {
                "backend": self.server.name,
                "path": self.path,
                "xff": self.headers.get("X-Forwarded-For"),
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@attrs.define
class Proxy:
    port: int
    backends: dict[str, _Backend]
    access_log: Path

    def get(self, path: str, token: str | None = None, *, query: bool = False) -> tuple[int, dict]:
        headers = {}
        if token is not None and query:
            sep = "&" if "?" in path else "?"
            path = f"{path}{sep}access_token={urllib.parse.quote(token, safe='')}"
        elif token is not None:
            headers["Authorization"] = f"Bearer {token}"
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("GET", path, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
        finally:
            conn.close()
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = {}
        return resp.status, body

    def hits(self) -> dict[str, int]:
        return {name: b.hits for name, b in self.backends.items()}


def _start_nginx(prefix: Path, conf: Path) -> subprocess.Popen[bytes]:
    nginx = nginx_binary()
    assert nginx is not None
    out = open(prefix / "nginx.out", "wb")
    try:
        return subprocess.Popen(
            [nginx, "-p", str(prefix), "-c", str(conf), "-e", "stderr"],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    finally:
        out.close()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture
def proxy(tmp_path: Path) -> Iterator[Proxy]:
    require_service("nginx")
    backends = {name: _Backend(name) for name in ("main", "sync1", "sync2")}
    threads = [
        threading.Thread(target=b.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        for b in backends.values()
    ]
    for t in threads:
        t.start()
    proc: subprocess.Popen[bytes] | None = None
    try:
        prefix = tmp_path / "nginx"
        prefix.mkdir()
        conf = prefix / "nginx.conf"
        # The proxy port is free when picked but could be taken before nginx binds
        # it; try a few ports.
        for _attempt in range(3):
            port = free_port()
            config = make_config(
                main_port=backends["main"].server_address[1],
                sync_ports=(
                    backends["sync1"].server_address[1],
                    backends["sync2"].server_address[1],
                ),
                proxy_port=port,
                extra_ports=tuple(free_port() for _ in range(4)),
            )
            conf.write_text(render_nginx(config, prefix=str(prefix)))
            proc = _start_nginx(prefix, conf)
            started = proc

            def ready(p: subprocess.Popen[bytes] = started, port: int = port) -> bool:
                return p.poll() is not None or port_is_open(port)

            wait_until(ready, timeout=20, description="nginx to listen or exit")
            if proc.poll() is None:
                break
            output = (prefix / "nginx.out").read_text(errors="replace")
            if "Address already in use" not in output:
                pytest.fail(f"nginx exited with {proc.returncode}:\n{output}")
        else:
            pytest.fail("nginx could not bind a free port in 3 attempts")
        yield Proxy(port=port, backends=backends, access_log=prefix / "access.log")
    finally:
        if proc is not None:
            _stop(proc)
        for b in backends.values():
            b.shutdown()
            b.server_close()


SYNC = "/_matrix/client/v3/sync"


def test_same_user_sticks_to_one_sync_worker(proxy: Proxy) -> None:
    for user in ("alice", "bob", "carol", "dave"):
        landed = set()
        for i in range(6):
            token = make_access_token(user)  # a new random part each time
            path = SYNC if i % 3 else "/_matrix/client/r0/sync?timeout=0"
            status, body = proxy.get(path, token, query=i % 2 == 1)
            assert status == 200
            landed.add(body["backend"])
        assert len(landed) == 1, f"{user} landed on {landed}"
        assert landed <= {"sync1", "sync2"}


def test_users_spread_over_both_sync_workers(proxy: Proxy) -> None:
    by_backend: dict[str, set[str]] = {}
    for i in range(40):
        user = f"user{i}"
        status, body = proxy.get(SYNC, make_access_token(user))
        assert status == 200
        by_backend.setdefault(body["backend"], set()).add(user)
    assert set(by_backend) == {"sync1", "sync2"}, by_backend
    assert proxy.hits()["main"] == 0


@pytest.mark.parametrize(
    "path",
    [
        "/_matrix/client/versions",
        "/_matrix/client/v3/rooms/!r:e.org/messages",
        "/_matrix/client/v3/sync/extra",
        "/.well-known/matrix/client",
    ],
)
def test_other_paths_go_to_main(proxy: Proxy, path: str) -> None:
    status, body = proxy.get(path, make_access_token("alice"))
    assert status == 200
    assert body["backend"] == "main"
    assert body["path"] == path
    assert body["xff"] == "127.0.0.1"


@pytest.mark.parametrize(
    "path",
    [
        "/_ganglion/replication/send_event",
        "/_ganglion/",
        "/_ganglion",
        "//_ganglion/x",
        "/%5Fganglion/x",
    ],
)
def test_internal_paths_are_404(proxy: Proxy, path: str) -> None:
    status, _ = proxy.get(path)
    assert status == 404
    assert proxy.hits() == {"main": 0, "sync1": 0, "sync2": 0}


def test_nginx_user_key_matches_python(proxy: Proxy) -> None:
    alice, bob = make_access_token("alice"), make_access_token("bob")
    cases: list[tuple[str | None, str | None]] = [
        (f"Bearer {alice}", None),
        (f"bearer {alice}", None),
        (None, bob),
        (f"Bearer {alice}", bob),
        ("Bearer opaque-token", bob),
        ("Basic dXNlcjpwdw==", None),
        (None, None),
    ]
    for header, query_token in cases:
        path = SYNC
        if query_token is not None:
            path += f"?access_token={query_token}"
        conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
        try:
            conn.request("GET", path, headers={"Authorization": header} if header else {})
            conn.getresponse().read()
        finally:
            conn.close()

    expected = [request_user_key(h, q) for h, q in cases]
    assert expected[0] == user_key_for_localpart("alice")

    def logged() -> list[str] | None:
        lines = proxy.access_log.read_text().splitlines()
        keys = [line.split(" user=")[1].split(" ")[0] for line in lines if " user=" in line]
        return keys if len(keys) >= len(cases) else None

    keys = wait_until(logged, timeout=10, description="access log entries")
    assert keys is not None
    assert [k if k != "-" else "" for k in keys[-len(cases) :]] == expected
