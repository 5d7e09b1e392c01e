"""Parsing and validating the config file: every error names its dotted key."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import pytest

from workers.config import (
    STREAMS,
    ConfigError,
    DatabaseConfig,
    HomeserverConfig,
    LimitsConfig,
    ListenAddress,
    load_config,
    parse_config,
    parse_listen_address,
)

EXAMPLE_YAML = """\
server_name: localhost
data_dir: /var/lib/ganglion
signing_key_path: /var/lib/ganglion/localhost.signing.key
public_baseurl: http://localhost:8008/
log_level: INFO
log_format: json
database:
  name: psycopg2
  args: {dsn: "host=127.0.0.1 dbname=ganglion", cp_min: 2, cp_max: 7}
redis: {enabled: true, host: 127.0.0.1, port: 6379, dbid: 1, password: null}
enable_registration: false
registration_shared_secret: "regsecret"
replication_secret: "replsecret"
well_known_client: {base_url: "https://matrix.example.com"}
cors_allowed_origins: ["*"]
limits: {max_json_body_size: 1048576, max_sync_timeout_ms: 300000,
         replication_wait_timeout_ms: 30000, default_messages_limit: 10,
         max_messages_limit: 1000, default_sync_timeline_limit: 10}
main: {listen: "127.0.0.1:8008", metrics_listen: "127.0.0.1:9100",
       replication_listen: "127.0.0.1:9093"}
workers:
  sync1: {type: sync, listen: "127.0.0.1:8011", metrics_listen: "127.0.0.1:9111"}
  sync2: {type: sync, listen: "127.0.0.1:8012", metrics_listen: "127.0.0.1:9112"}
stream_writers: {events: main}
proxy: {listen: "127.0.0.1:8080", server_name: "matrix.example.com"}
"""


def base() -> dict[str, Any]:
    import yaml

    data: dict[str, Any] = yaml.safe_load(EXAMPLE_YAML)
    return data


def single() -> dict[str, Any]:
    return {
        "server_name": "localhost",
        "data_dir": "data",
        "main": {"listen": "127.0.0.1:8008"},
    }


def test_load_full_example(tmp_path: Path) -> None:
    path = tmp_path / "homeserver.yaml"
    path.write_text(EXAMPLE_YAML)
    config = load_config(str(path))
    assert isinstance(config, HomeserverConfig)
    assert config.server_name == "localhost"
    assert config.database == DatabaseConfig(
        engine="psycopg2", postgres_dsn="host=127.0.0.1 dbname=ganglion", cp_min=2, cp_max=7
    )
    assert config.redis.enabled and config.redis.dbid == 1
    assert config.replication_secret == "replsecret"
    assert config.well_known_client_base_url == "https://matrix.example.com"
    assert config.main.replication_listen == ListenAddress("127.0.0.1", 9093)
    assert [w.name for w in config.workers] == ["sync1", "sync2"]
    assert config.workers[0].type == "sync"
    assert config.workers[1].listen == ListenAddress("127.0.0.1", 8012)
    assert config.is_multi_process
    assert config.writer_of("events").name == "main"
    assert config.proxy.server_name == "matrix.example.com"
    assert config.limits == LimitsConfig()
    assert config.raw["server_name"] == "localhost"
    assert [p.name for p in config.processes] == ["main", "sync1", "sync2"]


def test_defaults_and_relative_paths(tmp_path: Path) -> None:
    config = parse_config(single(), base_dir=str(tmp_path))
    data_dir = str(tmp_path / "data")
    assert config.data_dir == data_dir
    assert config.signing_key_path == os.path.join(data_dir, "localhost.signing.key")
    assert config.database.engine == "sqlite3"
    assert config.database.sqlite_path == os.path.join(data_dir, "homeserver.db")
    assert not config.is_multi_process
    assert config.stream_writers == {stream: "main" for stream in STREAMS}
    assert config.log_level == "INFO" and config.log_format == "json"
    assert config.redis.enabled is False
    assert config.cors_allowed_origins == ("*",)


def test_relative_sqlite_path_resolves_against_config_dir(tmp_path: Path) -> None:
    data = single()
    data["database"] = {"name": "sqlite3", "args": {"database": "db/hs.db"}}
    data["signing_key_path"] = "keys/k.key"
    config = parse_config(data, base_dir=str(tmp_path))
    assert config.database.sqlite_path == str(tmp_path / "db" / "hs.db")
    assert config.signing_key_path == str(tmp_path / "keys" / "k.key")
    data["database"]["args"]["database"] = ":memory:"
    assert parse_config(data, base_dir=str(tmp_path)).database.sqlite_path == ":memory:"


def test_public_baseurl_gets_trailing_slash() -> None:
    data = single()
    data["public_baseurl"] = "https://matrix.example.com"
    assert parse_config(data, base_dir="/").public_baseurl == "https://matrix.example.com/"


def test_postgres_keyword_args_become_a_dsn() -> None:
    data = single()
    data["database"] = {
        "name": "psycopg2",
        "args": {"host": "db", "port": 5433, "user": "gan", "password": "p w", "dbname": "g"},
    }
    dsn = parse_config(data, base_dir="/").database.postgres_dsn
    assert dsn == "host=db port=5433 user=gan password='p w' dbname=g"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:8008", ListenAddress("127.0.0.1", 8008)),
        ("0.0.0.0:1", ListenAddress("0.0.0.0", 1)),
        ("localhost:65535", ListenAddress("localhost", 65535)),
        ("[::1]:8008", ListenAddress("::1", 8008)),
        ("[::]:8448", ListenAddress("::", 8448)),
    ],
)
def test_listen_addresses(text: str, expected: ListenAddress) -> None:
    addr = parse_listen_address(text, "k")
    assert addr == expected
    assert str(addr) == text


def test_ipv6_in_config() -> None:
    data = single()
    data["main"] = {"listen": "[::1]:8008", "metrics_listen": "[::1]:9100"}
    config = parse_config(data, base_dir="/")
    assert config.main.listen == ListenAddress("::1", 8008)
    assert str(config.main.metrics_listen) == "[::1]:9100"


def _set(data: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    node = data
    for p in parents:
        node = node.setdefault(p, {})
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value


_DELETE = object()

# (dotted key to change, new value, expected error key, fragment of the reason)
MULTI_ERRORS: list[tuple[str, Any, str, str]] = [
    ("bogus", 1, "bogus", "unknown key"),
    ("limits.max_sync_timout_ms", 5, "limits.max_sync_timout_ms", "unknown key"),
    ("server_name", 5, "server_name", "expected a string"),
    ("server_name", "https://x", "server_name", "host name"),
    ("server_name", _DELETE, "server_name", "required"),
    ("data_dir", _DELETE, "data_dir", "required"),
    ("log_level", "LOUD", "log_level", "DEBUG"),
    ("log_format", "xml", "log_format", "json"),
    ("public_baseurl", "ftp://x", "public_baseurl", "http"),
    ("enable_registration", "yes please", "enable_registration", "true or false"),
    ("redis.port", "6379", "redis.port", "integer"),
    ("redis.port", 70000, "redis.port", "65535"),
    ("redis.enabled", False, "redis.enabled", "Redis"),
    ("database.name", "mysql", "database.name", "psycopg2"),
    ("database", {"name": "sqlite3"}, "database.name", "single process"),
    ("database.args.cp_min", True, "database.args.cp_min", "integer"),
    ("database.args.cp_max", 1, "database.args.cp_max", "cp_min"),
    ("database.args.bogus", 1, "database.args.bogus", "unknown key"),
    ("database.args.host", "x", "database.args.host", "not both"),
    ("replication_secret", _DELETE, "replication_secret", "required"),
    ("replication_secret", "", "replication_secret", "empty"),
    ("main.replication_listen", _DELETE, "main.replication_listen", "required"),
    ("main.listen", "8008", "main.listen", "HOST:PORT"),
    ("main.listen", 8008, "main.listen", "HOST:PORT"),
    ("main.metrics_listen", "127.0.0.1:0", "main.metrics_listen", "between 1 and 65535"),
    ("main.metrics_listen", "127.0.0.1:99999", "main.metrics_listen", "between 1 and 65535"),
    ("main.metrics_listen", "127.0.0.1:http", "main.metrics_listen", "numeric port"),
    ("main.metrics_listen", "::1:9100", "main.metrics_listen", "bracketed"),
    ("main.metrics_listen", "[nothex]:9100", "main.metrics_listen", "IPv6"),
    ("workers.sync1.listen", "abc", "workers.sync1.listen", "expected HOST:PORT, got 'abc'"),
    ("workers.sync1.listen", _DELETE, "workers.sync1.listen", "required"),
    ("workers.sync1.type", "media", "workers.sync1.type", "unknown worker type"),
    ("workers.sync1.type", "main", "workers.sync1.type", "unknown worker type"),
    ("workers.sync1.colour", "red", "workers.sync1.colour", "unknown key"),
    ("workers.sync2.listen", "127.0.0.1:8011", "workers.sync2.listen", "workers.sync1.listen"),
    ("workers.sync2.metrics_listen", "0.0.0.0:8008", "workers.sync2.metrics_listen", "main"),
    ("proxy.listen", "127.0.0.1:9100", "proxy.listen", "main.metrics_listen"),
    ("workers.Sync3", {"type": "sync", "listen": "127.0.0.1:8013"}, "workers.Sync3", "a-z"),
    ("workers.main", {"type": "sync", "listen": "127.0.0.1:8013"}, "workers.main", "reserved"),
    ("workers", ["sync1"], "workers", "mapping"),
    ("stream_writers.events", "nobody", "stream_writers.events", "no process named"),
    ("stream_writers.events", "sync1", "stream_writers.events", "replication_listen"),
    ("stream_writers.typo", "main", "stream_writers.typo", "unknown stream"),
    ("limits.max_messages_limit", 0, "limits.max_messages_limit", ">= 1"),
    ("limits.default_messages_limit", 5000, "limits.default_messages_limit", "max_messages"),
    ("well_known_client.base_url", "matrix.example.com", "well_known_client.base_url", "URL"),
    ("cors_allowed_origins", "*", "cors_allowed_origins", "list"),
    ("proxy.server_name", "a b", "proxy.server_name", "server_name"),
]


@pytest.mark.parametrize(("change", "value", "key", "reason"), MULTI_ERRORS)
def test_validation_errors_name_their_key(change: str, value: Any, key: str, reason: str) -> None:
    data = copy.deepcopy(base())
    _set(data, change, value)
    with pytest.raises(ConfigError) as info:
        parse_config(data, base_dir="/")
    assert info.value.key == key, str(info.value)
    assert reason in info.value.reason
    assert str(info.value).startswith(f"{key}: ")


def test_sqlite_with_workers_message_is_clear() -> None:
    data = base()
    data["database"] = {"name": "sqlite3"}
    with pytest.raises(ConfigError) as info:
        parse_config(data, base_dir="/")
    assert info.value.key == "database.name"
    assert "SQLite serves a single process only" in info.value.reason
    assert "PostgreSQL" in info.value.reason


def test_worker_stream_writer_with_replication_listener_is_accepted() -> None:
    data = base()
    data["workers"]["sync1"]["replication_listen"] = "127.0.0.1:9094"
    data["stream_writers"] = {"events": "sync1"}
    config = parse_config(data, base_dir="/")
    assert config.writer_of("events").name == "sync1"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "empty"),
        ("- a\n- b\n", "mapping"),
        ("server_name: [unclosed\n", "invalid YAML at line"),
        ("server_name: a\nserver_name: b\ndata_dir: d\n", "duplicate key 'server_name'"),
    ],
)
def test_bad_files_name_the_file(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "hs.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    assert info.value.key == str(path)
    assert fragment in info.value.reason


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(str(tmp_path / "nope.yaml"))
    assert "cannot read" in info.value.reason
