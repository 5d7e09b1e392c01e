"""Versioned schema migrations, applied in order at start by the process that owns the schema."""

from __future__ import annotations

import logging
import re
from importlib import resources

from storage.database import Database, Transaction

logger = logging.getLogger(__name__)

_FILE = re.compile(r"^(\d{4})_[a-z0-9_]+(\.(sqlite|postgres))?\.sql$")


class SchemaError(Exception):
    pass


def _migrations(engine_is_postgres: bool) -> list[tuple[int, str, str]]:
    """(version, filename, sql) for every migration that applies to this engine."""
    dialect = "postgres" if engine_is_postgres else "sqlite"
    found = []
    for entry in resources.files("storage.schema").iterdir():
        m = _FILE.match(entry.name)
        if not m or (m.group(3) and m.group(3) != dialect):
            continue
        found.append((int(m.group(1)), entry.name, entry.read_text()))
    return sorted(found)


def code_schema_version(engine_is_postgres: bool = False) -> int:
    return max(v for v, _, _ in _migrations(engine_is_postgres))


def _split_statements(sql: str) -> list[str]:
    lines = [ln for ln in sql.splitlines() if not ln.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


def _current_version(txn: Transaction) -> int | None:
    if txn.engine.is_postgres:
        row = txn.select_one("SELECT to_regclass('schema_version') IS NOT NULL")
        exists = bool(row and row[0])
    else:
        exists = bool(
            txn.select_one(
                "SELECT 1 FROM sqlite_master WHERE type='table' AND name='schema_version'"
            )
        )
    if not exists:
        return None
    row = txn.select_one("SELECT version FROM schema_version")
    return int(row[0]) if row else None


def _upgrade(txn: Transaction) -> tuple[int | None, int]:
    if txn.engine.is_postgres:
        # Serialise concurrent starters (e.g. main restarted while a test resets) on one lock.
        txn.execute("SELECT pg_advisory_xact_lock(727274)")
    else:
        # sqlite3 opens a transaction implicitly only before DML, so DDL would run (and stay)
        # outside it: begin explicitly, so a failed migration rolls back entirely.
        txn.execute("BEGIN IMMEDIATE")
    current = _current_version(txn)
    migrations = _migrations(txn.engine.is_postgres)
    newest = migrations[-1][0]
    if current is not None and current > newest:
        raise SchemaError(
            f"the database schema is version {current}, newer than this code knows ({newest}); "
            "run a newer Ganglion or restore a matching backup"
        )
    if current is None:
        txn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        txn.execute("INSERT INTO schema_version (version) VALUES (0)")
        current = 0
    before = current
    for version, name, sql in migrations:
        if version <= current:
            continue
        logger.info("applying schema migration", extra={"migration": name})
        for stmt in _split_statements(sql):
            txn.execute(stmt)
        txn.execute("UPDATE schema_version SET version = ?", (version,))
        current = version
    return before, current


async def prepare_database(db: Database) -> int:
    """Brings the schema up to date; returns the version now in force."""
    _, after = await db.run("prepare_database", _upgrade)
    return after


async def check_schema(db: Database) -> int:
    """For workers: the schema must be exactly the version the code knows."""
    current = await db.run("check_schema", _current_version)
    want = code_schema_version(db.engine.is_postgres)
    if current is None or current < want:
        raise SchemaError(
            f"the database schema is at version {current or 0} but this code needs {want}; "
            "start the main process first so that it applies the migrations"
        )
    if current > want:
        raise SchemaError(
            f"the database schema is version {current}, newer than this code knows ({want})"
        )
    return current
