"""pytest fixtures for real services and Ganglion processes (registered by tests/conftest.py).

Every fixture needing a service calls `require_service` first: the test fails
in CI and skips elsewhere when the service is missing. Everything started is
stopped at teardown, whether the test passed or not.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from . import services as _services
from .databases import db, raw_db
from .ganglion import Deployment, GanglionProcess, make_deployment_config
from .nginx import NginxServer
from .postgres import PostgresServer, dbname_of
from .redis import RedisServer
from .services import SERVICES, require_service
from .single import SingleServer, single_server

__all__ = [
    "db",
    "raw_db",
    "_require_marked_services",
    "deployment",
    "deployment_factory",
    "ganglion_factory",
    "nginx_factory",
    "pg_admin_dsn_fixture",
    "pg_dsn",
    "pg_server",
    "redis_server",
    "single",
]


@pytest.fixture(autouse=True)
def _require_marked_services(request: pytest.FixtureRequest) -> None:
    """`@pytest.mark.postgres` / `redis` / `nginx` make a test require that service."""
    for service in SERVICES:
        if request.node.get_closest_marker(service) is not None:
            require_service(service)


@pytest.fixture(scope="session", name="pg_admin_dsn")
def pg_admin_dsn_fixture() -> str:
    """DSN of a PostgreSQL role that may create databases (GANGLION_TEST_PG_DSN)."""
    require_service("postgres")
    return _services.pg_admin_dsn()


@pytest.fixture(scope="session")
def pg_server(pg_admin_dsn: str) -> Iterator[PostgresServer]:
    server = PostgresServer(pg_admin_dsn)
    try:
        yield server
    finally:
        server.drop_all()


@pytest.fixture
def pg_dsn(pg_server: PostgresServer) -> Iterator[str]:
    """DSN of a fresh, empty database, dropped after the test."""
    dsn = pg_server.fresh_database()
    try:
        yield dsn
    finally:
        pg_server.drop_database(dbname_of(dsn))


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A private, running redis-server on a free 127.0.0.1 port (stop/start/restart-able)."""
    require_service("redis")
    server = RedisServer(directory=tmp_path / "redis")
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def nginx_factory(tmp_path: Path) -> Iterator[Callable[..., NginxServer]]:
    """`nginx_factory(config_text, prefix_dir=None, **kw)` → a started NginxServer."""
    require_service("nginx")
    started: list[NginxServer] = []

    def make(
        config_text: str, prefix_dir: str | os.PathLike[str] | None = None, **kwargs: Any
    ) -> NginxServer:
        prefix = Path(prefix_dir) if prefix_dir else tmp_path / f"nginx{len(started)}"
        server = NginxServer(config_text, prefix, **kwargs)
        started.append(server)
        server.start()
        return server

    try:
        yield make
    finally:
        _stop_all(started)


@pytest.fixture
def ganglion_factory(tmp_path: Path) -> Iterator[Callable[..., GanglionProcess]]:
    """`ganglion_factory(argv, name, health_url, **kw)` → a started GanglionProcess.

    Logs go to tmp_path/logs/NAME.log.
    """
    started: list[GanglionProcess] = []

    def make(argv: list[str], name: str, health_url: str, **kwargs: Any) -> GanglionProcess:
        proc = GanglionProcess(argv, name, tmp_path / "logs" / f"{name}.log", health_url, **kwargs)
        started.append(proc)
        proc.start()
        return proc

    try:
        yield make
    finally:
        _stop_all(started)


@pytest.fixture
def deployment_factory(tmp_path: Path) -> Iterator[Callable[..., Deployment]]:
    """`deployment_factory(config_path, **kw)` → a started Deployment, stopped at teardown."""
    started: list[Deployment] = []

    def make(config_path: str | os.PathLike[str], **kwargs: Any) -> Deployment:
        work = tmp_path / f"deployment{len(started)}"
        dep = Deployment(config_path, work, **kwargs)
        started.append(dep)
        dep.start()
        return dep

    try:
        yield make
    finally:
        _stop_all(started)


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SingleServer]:
    """One Ganglion process on SQLite shared by a test module (default config)."""
    with single_server(tmp_path_factory.mktemp("single")) as server:
        yield server


@pytest.fixture
def deployment(
    pg_dsn: str,
    redis_server: RedisServer,
    tmp_path: Path,
    deployment_factory: Callable[..., Deployment],
) -> Deployment:
    """A running deployment: fresh PostgreSQL db, private Redis, main + 2 sync workers, nginx."""
    require_service("nginx")
    config = make_deployment_config(tmp_path / "config", pg_dsn, redis_server.port)
    return deployment_factory(config)


def _stop_all(things: Sequence[NginxServer | GanglionProcess | Deployment]) -> None:
    errors: list[BaseException] = []
    for thing in reversed(things):
        try:
            thing.stop()
        except BaseException as e:
            errors.append(e)
    if errors:
        raise errors[0]
