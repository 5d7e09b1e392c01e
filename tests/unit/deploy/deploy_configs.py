"""Configs shared by the deploy tests (imported as a sibling module)."""

from __future__ import annotations

from typing import Any

from workers.config import HomeserverConfig, parse_config


def make_config(
    *,
    main_port: int = 8008,
    sync_ports: tuple[int, ...] = (8011, 8012),
    proxy_port: int = 8080,
    host: str = "127.0.0.1",
    extra_ports: tuple[int, ...] | None = None,
    max_sync_timeout_ms: int = 300_000,
) -> HomeserverConfig:
    """A deployment with main and one sync worker per entry of `sync_ports`.

    `extra_ports` (metrics for each process, then replication) default to 9100+.
    """
    n = len(sync_ports)
    extra = extra_ports if extra_ports is not None else tuple(range(9100, 9100 + n + 2))

    def a(port: int) -> str:
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    data: dict[str, Any] = {
        "server_name": "example.org",
        "data_dir": "/var/lib/ganglion",
        "limits": {"max_sync_timeout_ms": max_sync_timeout_ms, "max_json_body_size": 65536},
        "main": {
            "listen": a(main_port),
            "metrics_listen": a(extra[0]),
            "replication_listen": a(extra[n + 1]),
        },
        "proxy": {"listen": a(proxy_port), "server_name": "matrix.example.org"},
    }
    if n:
        data["database"] = {"name": "psycopg2", "args": {"dsn": "dbname=ganglion"}}
        data["redis"] = {"enabled": True}
        data["replication_secret"] = "s" * 32
        data["workers"] = {
            f"sync{i + 1}": {
                "type": "sync",
                "listen": a(port),
                "metrics_listen": a(extra[i + 1]),
            }
            for i, port in enumerate(sync_ports)
        }
    return parse_config(data, base_dir="/")
