"""Store tests run against both engines: a `Database` on a fresh SQLite file or a fresh
PostgreSQL database, with or without the schema."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted  # type: ignore[import-untyped]
from twisted.internet import defer

from storage.database import Database
from storage.migrations import code_schema_version, prepare_database
from workers.config import DatabaseConfig

ENGINES = [
    pytest.param("sqlite3", id="sqlite3"),
    pytest.param("psycopg2", id="psycopg2", marks=pytest.mark.postgres),
]


def blockon(coro: Any) -> Any:
    """Runs a coroutine on the reactor from a synchronous fixture or test."""
    return pytest_twisted.blockon(defer.ensureDeferred(coro))


@pytest.fixture(params=ENGINES)
def raw_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """A Database on a fresh, empty SQLite file or PostgreSQL database (no schema)."""
    if request.param == "sqlite3":
        config = DatabaseConfig(engine="sqlite3", sqlite_path=str(tmp_path / "ganglion.db"))
    else:
        dsn = request.getfixturevalue("pg_dsn")
        config = DatabaseConfig(engine="psycopg2", postgres_dsn=dsn, cp_min=1, cp_max=5)
    db = Database(config)
    try:
        yield db
    finally:
        db.close()


@pytest.fixture
def db(raw_db: Database) -> Database:
    """`raw_db` with the schema prepared."""
    version = blockon(prepare_database(raw_db))
    assert version == code_schema_version(raw_db.engine.is_postgres)
    return raw_db
