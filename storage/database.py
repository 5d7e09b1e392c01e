"""One asynchronous database API over SQLite (sqlite3) and PostgreSQL (psycopg2).

Stores write SQL with `?` placeholders; the PostgreSQL engine rewrites them to `%s`.
Every transaction is named, so its count and duration appear in the metrics.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Concatenate, ParamSpec, TypeVar

from prometheus_client import Counter, Histogram
from twisted.enterprise import adbapi

from workers.config import DatabaseConfig

logger = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

TXN_COUNT = Counter(
    "ganglion_db_transactions_total",
    "Database transactions run, by name and outcome",
    ["name", "outcome"],
)
TXN_DURATION = Histogram(
    "ganglion_db_transaction_duration_seconds",
    "Time spent in database transactions, by name",
    ["name"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


# Rows per `IN (...)` list: far below SQLite's variable limit, and PostgreSQL plans
# stay cheap.
IN_CHUNK = 500


def placeholders(n: int) -> str:
    """`?,?,...` for an `IN (...)` list of n values."""
    return ",".join("?" * n)


class Engine:
    """What differs between the two SQL dialects we speak."""

    name: str
    is_postgres: bool

    def convert_sql(self, sql: str) -> str:
        return sql


class SqliteEngine(Engine):
    name = "sqlite3"
    is_postgres = False


class PostgresEngine(Engine):
    name = "psycopg2"
    is_postgres = True

    def convert_sql(self, sql: str) -> str:
        return sql.replace("?", "%s")


class Transaction:
    """A thin cursor wrapper handed to transaction functions (runs on a pool thread)."""

    __slots__ = ("_cursor", "engine", "_after_commit")

    def __init__(self, cursor: Any, engine: Engine) -> None:
        self._cursor = cursor
        self.engine = engine
        self._after_commit: list[Callable[[], None]] = []

    def execute(self, sql: str, args: Sequence[Any] = ()) -> None:
        self._cursor.execute(self.engine.convert_sql(sql), tuple(args))

    def execute_many(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        rows = [tuple(r) for r in rows]
        if rows:
            self._cursor.executemany(self.engine.convert_sql(sql), rows)

    def fetchall(self) -> list[tuple[Any, ...]]:
        return list(self._cursor.fetchall())

    def fetchone(self) -> tuple[Any, ...] | None:
        row = self._cursor.fetchone()
        return tuple(row) if row is not None else None

    def select(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        self.execute(sql, args)
        return self.fetchall()

    def select_one(self, sql: str, args: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        self.execute(sql, args)
        return self.fetchone()

    @property
    def rowcount(self) -> int:
        return int(self._cursor.rowcount)

    def call_after_commit(self, fn: Callable[[], None]) -> None:
        """Runs `fn` on the reactor thread once the transaction has committed."""
        self._after_commit.append(fn)


def _sqlite_open(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")


class Database:
    """A pool of connections to one database, running named transactions on threads."""

    def __init__(self, config: DatabaseConfig) -> None:
        self.config = config
        self.engine: Engine
        if config.engine == "sqlite3":
            self.engine = SqliteEngine()
            # SQLite serialises writers anyway; one connection avoids "database is locked".
            self._pool = adbapi.ConnectionPool(
                "sqlite3",
                config.sqlite_path,
                check_same_thread=False,
                cp_min=1,
                cp_max=1,
                cp_openfun=_sqlite_open,
                isolation_level="DEFERRED",
            )
        elif config.engine == "psycopg2":
            self.engine = PostgresEngine()
            self._pool = adbapi.ConnectionPool(
                "psycopg2",
                config.postgres_dsn,
                cp_min=config.cp_min,
                cp_max=config.cp_max,
                cp_reconnect=True,
            )
        else:
            raise ValueError(f"unknown database engine {config.engine!r}")

    async def run(
        self,
        name: str,
        func: Callable[Concatenate[Transaction, P], R],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> R:
        """Runs `func(txn, *args)` in a transaction on a pool thread; retries never."""
        after: list[Callable[[], None]] = []

        def interaction(cursor: Any) -> R:
            txn = Transaction(cursor, self.engine)
            start = time.perf_counter()
            try:
                return func(txn, *args, **kwargs)
            finally:
                TXN_DURATION.labels(name).observe(time.perf_counter() - start)
                after.extend(txn._after_commit)

        try:
            result: R = await self._pool.runInteraction(interaction)
        except Exception:
            TXN_COUNT.labels(name, "error").inc()
            raise
        TXN_COUNT.labels(name, "ok").inc()
        for fn in after:
            fn()
        return result

    async def select_in(
        self,
        name: str,
        sql: str,
        before: Sequence[Any],
        values: Iterable[Any],
    ) -> list[tuple[Any, ...]]:
        """Runs `sql`, whose `{in}` stands for an `IN (...)` list, over `values` in chunks
        (one transaction); `before` are the arguments preceding the list."""
        ordered = sorted(set(values))
        if not ordered:
            return []

        def txn_fn(txn: Transaction) -> list[tuple[Any, ...]]:
            rows: list[tuple[Any, ...]] = []
            for i in range(0, len(ordered), IN_CHUNK):
                chunk = ordered[i : i + IN_CHUNK]
                rows.extend(
                    txn.select(sql.format(**{"in": placeholders(len(chunk))}), [*before, *chunk])
                )
            return rows

        return await self.run(name, txn_fn)

    async def select(self, name: str, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return await self.run(name, lambda txn: txn.select(sql, args))

    def close(self) -> None:
        self._pool.close()
