"""Which external services are available, and what a test does when one is not.

In CI (`CI=true`) a test that needs a missing service FAILS; elsewhere it is
skipped with the reason. Every test goes through `require_service`, either
directly, through the fixtures, or through the `postgres`/`redis`/`nginx`
markers (see tests/conftest.py).
"""

from __future__ import annotations

import functools
import os
import re
import shutil
from typing import Literal, NoReturn

import pytest

Service = Literal["postgres", "redis", "nginx"]
SERVICES: tuple[Service, ...] = ("postgres", "redis", "nginx")

DEFAULT_PG_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"


def in_ci() -> bool:
    """True when running in CI (the `CI` environment variable is truthy)."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes", "on")


def pg_admin_dsn() -> str:
    """The DSN of a PostgreSQL role allowed to create databases."""
    return os.environ.get("GANGLION_TEST_PG_DSN") or DEFAULT_PG_DSN


def find_binary(name: str, *candidates: str) -> str | None:
    """First existing executable among `candidates`, else `name` on PATH."""
    for path in candidates:
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    found = shutil.which(name)
    if found:
        return found
    for directory in ("/usr/sbin", "/usr/local/sbin", "/sbin"):
        path = os.path.join(directory, name)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def nginx_binary() -> str | None:
    return find_binary("nginx", "/usr/sbin/nginx")


def redis_binary() -> str | None:
    return find_binary("redis-server")


@functools.cache
def _postgres_problem(dsn: str) -> str | None:
    try:
        import psycopg2
    except ImportError as e:  # pragma: no cover - psycopg2 is a dependency
        return f"psycopg2 is not importable: {e}"
    try:
        conn = psycopg2.connect(dsn, connect_timeout=5)
    except psycopg2.Error as e:
        return f"cannot connect to PostgreSQL with {_redact(dsn)!r}: {str(e).strip()}"
    conn.close()
    return None


def _redact(dsn: str) -> str:
    return re.sub(r"(password\s*=\s*)\S+", r"\1***", dsn)


def service_problem(service: Service) -> str | None:
    """None if `service` is usable, else a human-readable reason why not."""
    if service == "postgres":
        return _postgres_problem(pg_admin_dsn())
    if service == "redis":
        return None if redis_binary() else "redis-server binary not found on PATH"
    if service == "nginx":
        return None if nginx_binary() else "nginx binary not found at /usr/sbin/nginx or on PATH"
    raise ValueError(f"unknown service {service!r}; known: {', '.join(SERVICES)}")


def unavailable(reason: str) -> NoReturn:
    """Fail (in CI) or skip (elsewhere) the current test because of `reason`."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true: missing services are failures)", pytrace=False)
    pytest.skip(reason)


def require_service(service: Service) -> None:
    """Make the current test fail in CI / skip elsewhere unless `service` is usable."""
    problem = service_problem(service)
    if problem is not None:
        unavailable(f"{service} unavailable: {problem}")
