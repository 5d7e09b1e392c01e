"""Routes to a stream's writer: resolved from `stream_writers`, rendered into nginx."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.harness.services import nginx_binary, require_service
from workers.config import ConfigError, HomeserverConfig, parse_config
from workers.deploy.nginx import render_nginx, writer_upstream_name
from workers.routing import ROUTES, Route, route_for_path, routes_for, writer_process, writer_routes

ROOM = "!r:e.org"
WRITES = {
    f"/_matrix/client/v3/rooms/{ROOM}/typing/@a:e.org": "typing",
    f"/_matrix/client/r0/rooms/{ROOM}/receipt/m.read/$e": "receipts",
    f"/_matrix/client/v3/rooms/{ROOM}/read_markers": "receipts",
    "/_matrix/client/v3/presence/@a:e.org/status": "presence",
    "/_matrix/client/v3/user/@a:e.org/account_data/m.direct": "account_data",
    f"/_matrix/client/v3/user/@a:e.org/rooms/{ROOM}/account_data/x.y": "account_data",
    f"/_matrix/client/v3/user/@a:e.org/rooms/{ROOM}/tags": "account_data",
    f"/_matrix/client/unstable/user/@a:e.org/rooms/{ROOM}/tags/u.work": "account_data",
    "/_matrix/client/v3/sendToDevice/m.x/txn1": "to_device",
    "/_matrix/client/v3/keys/upload": "device_lists",
    "/_matrix/client/v3/keys/claim": "device_lists",
    "/_matrix/client/v3/keys/device_signing/upload": "device_lists",
    "/_matrix/client/unstable/keys/signatures/upload": "device_lists",
    "/_matrix/client/v3/devices/ABCDEF": "device_lists",
    "/_matrix/client/r0/delete_devices": "device_lists",
}


def _config(moved: dict[str, str] | None = None, **worker: Any) -> HomeserverConfig:
    data: dict[str, Any] = {
        "server_name": "e.org",
        "data_dir": "/var/lib/ganglion",
        "database": {"name": "psycopg2", "args": {"dsn": "dbname=g"}},
        "redis": {"enabled": True},
        "replication_secret": "s" * 32,
        "main": {"listen": "127.0.0.1:8008", "replication_listen": "127.0.0.1:9093"},
        "workers": {
            "sync1": {"type": "sync", "listen": "127.0.0.1:8011"},
            "writer1": {
                "type": "stream_writer",
                "listen": "127.0.0.1:8021",
                "replication_listen": "127.0.0.1:9094",
                **worker,
            },
        },
        "stream_writers": moved if moved is not None else {"typing": "writer1"},
    }
    return parse_config(data, base_dir="/")


@pytest.mark.parametrize(("path", "stream"), sorted(WRITES.items()))
def test_each_write_endpoint_routes_to_its_streams_writer(path: str, stream: str) -> None:
    route = route_for_path(path)
    assert route is not None and route.writer_of == stream
    assert route in writer_routes(stream)
    assert writer_process(_config(), route) == ("writer1" if stream == "typing" else "main")


@pytest.mark.parametrize(
    "path",
    [
        f"/_matrix/client/v3/rooms/{ROOM}/send/m.room.message/t",
        f"/_matrix/client/v3/rooms/{ROOM}/typing",
        "/_matrix/client/v3/user/@a:e.org/filter",
        "/_matrix/client/v3/sendToDevice/m.x",
        "/_matrix/client/v3/keys/query",
        "/_matrix/client/v3/keys/changes",
        "/_matrix/client/v3/devices",
    ],
)
def test_other_paths_are_not_writer_routes(path: str) -> None:
    route = route_for_path(path)
    assert route is None or route.writer_of is None


def test_writer_routes_are_not_served_by_type() -> None:
    assert all(r.writer_of is None for r in routes_for("main"))
    # Every writer route is exercised above.
    covered = {route_for_path(path) for path in WRITES}
    assert {r for r in ROUTES if r.writer_of} == covered
    with pytest.raises(ValueError):
        Route("^/x$", "sync", writer_of="typing")
    with pytest.raises(ValueError):
        Route("^/x$", "main", writer_of="nonsense")


def _location_target(conf: str, stream: str) -> set[str]:
    """The proxy_pass targets of the locations nginx renders for `stream`'s writer routes."""
    targets = set()
    for route in writer_routes(stream):
        block = conf[conf.index(route.pattern) :]
        match = re.search(r"proxy_pass http://([a-z0-9_-]+);", block)
        assert match is not None
        targets.add(match.group(1))
    return targets


def test_nginx_sends_a_moved_stream_to_its_writer_and_the_rest_to_main() -> None:
    conf = render_nginx(_config({"typing": "writer1", "to_device": "writer1"}))
    name = writer_upstream_name("writer1")
    assert f"upstream {name} {{\n        server 127.0.0.1:8021;" in conf
    assert _location_target(conf, "typing") == {name}
    assert _location_target(conf, "to_device") == {name}
    for stream in ("receipts", "presence", "account_data"):
        assert _location_target(conf, stream) == {"ganglion_main"}
    # Writer locations come before anything more general (first regex match wins).
    assert conf.index("/typing/") < conf.index("location /")


def test_without_moved_streams_everything_goes_to_main() -> None:
    conf = render_nginx(_config({"typing": "main"}, type="sync"))
    assert "ganglion_writer_" not in conf
    for stream in set(WRITES.values()):
        assert _location_target(conf, stream) == {"ganglion_main"}


def test_a_stream_writer_worker_must_write_a_stream() -> None:
    with pytest.raises(ConfigError) as e:
        _config({})
    assert e.value.key == "workers.writer1.type"
    with pytest.raises(ConfigError) as e:
        _config({"receipts": "sync1"})
    assert e.value.key == "stream_writers.receipts"


@pytest.mark.nginx
def test_nginx_accepts_the_moved_config(tmp_path: Path) -> None:
    require_service("nginx")
    prefix = tmp_path / "nginx"
    prefix.mkdir()
    conf = prefix / "nginx.conf"
    moved = _config({"typing": "writer1", "receipts": "writer1"})
    conf.write_text(render_nginx(moved, prefix=str(prefix)))
    nginx = nginx_binary()
    assert nginx is not None
    result = subprocess.run(
        [nginx, "-t", "-p", str(prefix), "-c", str(conf), "-e", "stderr"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
