"""Tests of the test harness itself (tests/harness)."""

from __future__ import annotations

import http.server
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest
import redis as redis_py
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.harness import services
from tests.harness.ganglion import (
    Deployment,
    GanglionProcess,
    _parse_process_names,
    _rewrite_listens,
    load_config,
    make_deployment_config,
    parse_listen,
)
from tests.harness.matrix import request
from tests.harness.metrics import parse as parse_metrics
from tests.harness.nginx import NginxServer, listen_ports, simple_proxy_config
from tests.harness.ports import free_port, port_is_open
from tests.harness.postgres import PostgresServer, dbname_of
from tests.harness.redis import RedisServer
from tests.harness.single import SingleServer
from tests.harness.waiting import WaitTimeout, wait_until

# ------------------------------------------------------------- waiting/ports --


def test_wait_until_returns_first_truthy_value() -> None:
    calls = iter([0, None, "", "ready"])
    assert wait_until(lambda: next(calls), timeout=5, interval=0.001) == "ready"


def test_wait_until_raises_on_deadline_with_clear_message() -> None:
    start = time.monotonic()
    with pytest.raises(WaitTimeout) as info:
        wait_until(lambda: False, timeout=0.3, interval=0.05, description="the impossible")
    elapsed = time.monotonic() - start
    assert 0.3 <= elapsed < 2.0
    message = str(info.value)
    assert "timed out after 0.3s waiting for the impossible" in message
    assert "last value False" in message


def test_wait_until_ignores_listed_exceptions_and_reports_the_last() -> None:
    def broken() -> bool:
        raise ConnectionError("still down")

    with pytest.raises(WaitTimeout, match="ConnectionError: still down"):
        wait_until(broken, timeout=0.2, interval=0.05, ignore=(ConnectionError,))


def test_wait_until_propagates_other_exceptions_immediately() -> None:
    def broken() -> bool:
        raise KeyError("boom")

    with pytest.raises(KeyError):
        wait_until(broken, timeout=10)


def test_free_port_is_bindable_on_loopback_and_unique() -> None:
    ports = {free_port() for _ in range(20)}
    assert len(ports) == 20
    port = ports.pop()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
        sock.listen()
        assert port_is_open(port)
    assert not port_is_open(port)


# ----------------------------------------------------------------- services --


def test_missing_service_fails_in_ci_and_skips_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GANGLION_TEST_PG_DSN", f"host=127.0.0.1 port={free_port()} user=nobody")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="postgres unavailable"):
        services.require_service("postgres")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="postgres unavailable"):
        services.require_service("postgres")


# ----------------------------------------------------------------- postgres --


def test_fresh_database_is_created_empty_and_dropped(pg_admin_dsn: str) -> None:
    server = PostgresServer(pg_admin_dsn)
    dsn = server.fresh_database()
    name = dbname_of(dsn)
    try:
        assert name.startswith("ganglion_test_")
        assert server.database_exists(name)
        conn = psycopg2.connect(dsn)
        try:
            with conn, conn.cursor() as cur:
                cur.execute("SELECT current_database()")
                assert cur.fetchone() == (name,)
                cur.execute("CREATE TABLE t (x int)")
                cur.execute("INSERT INTO t VALUES (1)")
        finally:
            conn.close()
        # A second database is independent of the first.
        other = server.fresh_database()
        assert dbname_of(other) != name
        # Open connections do not prevent the drop.
        lingering = psycopg2.connect(dsn)
    finally:
        server.drop_all()
    assert not server.database_exists(name)
    assert not server.database_exists(dbname_of(other))
    lingering.close()


@pytest.mark.postgres
def test_pg_dsn_fixture_gives_a_working_database(pg_dsn: str) -> None:
    conn = psycopg2.connect(pg_dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT 1")
            assert cur.fetchone() == (1,)
    finally:
        conn.close()


# -------------------------------------------------------------------- redis --


def test_redis_outage_and_recovery_on_the_same_port(redis_server: RedisServer) -> None:
    port = redis_server.port
    # No client-side retries: the test must see the outage itself.
    client = redis_py.Redis(
        host="127.0.0.1",
        port=port,
        socket_timeout=2,
        socket_connect_timeout=2,
        retry=Retry(NoBackoff(), 0),
    )
    try:
        assert client.ping()
        client.set("k", "v")
        assert client.get("k") == b"v"

        redis_server.stop()
        assert not redis_server.running
        with pytest.raises(redis_py.ConnectionError):
            client.ping()

        redis_server.start()
        assert redis_server.port == port
        wait_until(client.ping, timeout=10, ignore=(redis_py.ConnectionError,))
        # No persistence: the restarted server is empty.
        assert client.get("k") is None

        redis_server.restart()
        wait_until(client.ping, timeout=10, ignore=(redis_py.ConnectionError,))
    finally:
        client.close()


def test_redis_server_refuses_a_busy_port(tmp_path: Path, redis_server: RedisServer) -> None:
    other = RedisServer(port=redis_server.port, directory=tmp_path / "other")
    with pytest.raises(RuntimeError, match="already in use"):
        other.start()


# -------------------------------------------------------------------- nginx --


class _Backend(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server API
        body = json.dumps({"path": self.path, "host": self.headers.get("Host")}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def backend_port() -> Iterator[int]:
    """A tiny HTTP server on 127.0.0.1 answering every GET with its path as JSON."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Backend)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_nginx_proxies_to_a_backend(
    tmp_path: Path, backend_port: int, nginx_factory: Callable[..., NginxServer]
) -> None:
    port = free_port()
    prefix = tmp_path / "nginx"
    server = nginx_factory(simple_proxy_config(port, backend_port, prefix), prefix)
    assert server.running
    status, body = request("GET", f"http://127.0.0.1:{port}/some/path?x=1")
    assert status == 200
    assert body["path"] == "/some/path?x=1"

    server.stop()
    assert not port_is_open(port)
    status_after = None
    with pytest.raises(OSError):
        status_after, _ = request("GET", f"http://127.0.0.1:{port}/", timeout=2)
    assert status_after is None


def test_nginx_rejects_an_invalid_config(
    tmp_path: Path, nginx_factory: Callable[..., NginxServer]
) -> None:
    with pytest.raises(RuntimeError, match="nginx rejected"):
        nginx_factory("this is not nginx config;", tmp_path / "bad")


def test_nginx_config_parsing() -> None:
    text = "server {\n  listen 127.0.0.1:8081;\n  listen 8082 default_server;\n  # listen 9;\n}\n"
    assert listen_ports(text) == [8081, 8082]
    with pytest.raises(ValueError, match="daemon on"):
        NginxServer("daemon on;\n" + text, "/nonexistent", binary="/bin/true")
    server = NginxServer("daemon off;\npid /x.pid;\n" + text, "/tmp/p", binary="/bin/true")
    assert "-g" not in server.argv()


# ------------------------------------------------------------------ metrics --


def test_metrics_parser_reads_labels_holding_braces_commas_and_quotes() -> None:
    text = (
        "# HELP req_total Requests\n"
        "# TYPE req_total counter\n"
        'req_total{endpoint="/rooms/{roomId}/send/{eventType}/{txnId}",method="PUT",'
        'worker="main"} 3.0\n'
        'req_total{endpoint="/a,{b}=\\"c\\"",method="GET",worker="main"} 2.0\n'
        'req_total{endpoint="/rooms/{roomId}/state",method="GET",worker="main"} 4.0\n'
        "# HELP up Up\n"
        "# TYPE up gauge\n"
        "up 1.0\n"
    )
    found = parse_metrics(text)
    assert found.first("req_total", endpoint="/rooms/{roomId}/send/{eventType}/{txnId}") == 3
    assert found.first("req_total", endpoint='/a,{b}="c"', method="GET") == 2
    assert found.total("req_total", method="GET") == 6
    assert found.total("req_total", worker="main") == 9
    assert found.first("req_total", method="DELETE") is None
    assert found.total("req_total", method="DELETE") == 0
    assert found.first("up") == 1


def test_single_server_exposes_parked_long_polls(single: SingleServer) -> None:
    alice = single.new_user()
    status, body = alice.sync()
    assert status == 200, body
    assert single.metrics().first("ganglion_sync_waiting_listeners", worker="main") == 0
    answers: list[tuple[int, Any]] = []
    poll = threading.Thread(
        target=lambda: answers.append(alice.sync(since=body["next_batch"], timeout_ms=20_000))
    )
    poll.start()
    try:
        single.wait_for_waiting_listeners(1)
        with pytest.raises(WaitTimeout):
            single.wait_for_waiting_listeners(2, timeout=0.2)
        status, created = alice.create_room()
        assert status == 200, created
    finally:
        poll.join(30)
    [(status, woken)] = answers
    assert status == 200 and created["room_id"] in woken["rooms"]["join"], woken
    # The answer is written after the listener stopped waiting.
    assert single.metrics().first("ganglion_sync_waiting_listeners", worker="main") == 0
    assert single.new_errors() == []


# ----------------------------------------------------------------- ganglion --


def test_ganglion_process_that_exits_fails_fast_with_its_log(tmp_path: Path) -> None:
    proc = GanglionProcess(
        ["run", "-c", str(tmp_path / "does-not-exist.yaml")],
        "main",
        tmp_path / "main.log",
        f"http://127.0.0.1:{free_port()}/health",
        start_timeout=60,
    )
    start = time.monotonic()
    with pytest.raises(RuntimeError, match="exited with") as info:
        proc.start()
    assert time.monotonic() - start < 30
    assert "log tail" in str(info.value)
    assert not proc.running


def test_config_rewriting_moves_every_listener_to_free_loopback_ports() -> None:
    config: dict[str, Any] = {
        "main": {
            "listen": "0.0.0.0:8008",
            "metrics_listen": {"host": "0.0.0.0", "port": 9000},
            "replication_listen": "127.0.0.1:9093",
        },
        "workers": {"sync1": {"type": "sync", "listen": "127.0.0.1:8083", "metrics_listen": None}},
        "proxy": {"listen": "127.0.0.1:8080", "server_name": "localhost"},
    }
    _rewrite_listens(config)
    assert config["main"]["listen"].startswith("127.0.0.1:")
    assert config["main"]["metrics_listen"]["host"] == "127.0.0.1"
    assert config["workers"]["sync1"]["metrics_listen"] is None
    ports = {
        config["main"]["listen"],
        config["main"]["replication_listen"],
        config["workers"]["sync1"]["listen"],
        config["proxy"]["listen"],
    }
    assert len(ports) == 4 and "127.0.0.1:8008" not in ports


def test_process_order_parsing() -> None:
    known = ["main", "sync1", "sync2"]
    assert _parse_process_names("main\nsync1\nsync2\n", known) == known
    assert _parse_process_names("main: ganglion run -c x\nsync1: ganglion worker", known) == [
        "main",
        "sync1",
    ]
    assert _parse_process_names('[{"name": "main"}, "sync2"]', known) == ["main", "sync2"]
    with pytest.raises(RuntimeError, match="cannot understand"):
        _parse_process_names("bogus\n", known)


@pytest.mark.postgres
@pytest.mark.nginx
def test_deployment_config_on_free_ports_and_its_nginx_starts(tmp_path: Path, pg_dsn: str) -> None:
    redis_port = free_port()
    path = make_deployment_config(tmp_path / "cfg", pg_dsn, redis_port, sync_workers=2)
    config = load_config(path)
    assert config["redis"] == {**config["redis"], "enabled": True, "port": redis_port}
    assert dbname_of(pg_dsn) in str(config["database"]["args"]["dsn"])
    listens = [
        config["main"]["listen"],
        config["main"]["metrics_listen"],
        config["main"]["replication_listen"],
        config["proxy"]["listen"],
    ]
    for worker in config["workers"].values():
        listens += [worker["listen"], worker["metrics_listen"]]
    addresses = [parse_listen(v) for v in listens]
    assert all(host == "127.0.0.1" for host, _ in addresses)
    assert len({port for _, port in addresses}) == len(addresses) == 8

    deployment = Deployment(path, tmp_path / "work")
    assert deployment.process_order() == ["main", "sync1", "sync2"]
    assert config["public_baseurl"].rstrip("/") == deployment.proxy_url
    nginx = deployment.start_nginx()
    try:
        assert nginx.running
        assert port_is_open(parse_listen(config["proxy"]["listen"])[1])
    finally:
        deployment.stop()
    assert not nginx.running
