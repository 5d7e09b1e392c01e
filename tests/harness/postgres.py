"""Throw-away PostgreSQL databases on the machine's PostgreSQL server."""

from __future__ import annotations

import os
import uuid

import psycopg2
import psycopg2.extensions
from psycopg2 import sql

from .services import pg_admin_dsn


class PostgresServer:
    """A PostgreSQL server reachable with an admin DSN (env `GANGLION_TEST_PG_DSN`).

    `fresh_database()` creates a uniquely named database and returns its DSN;
    `drop_all()` drops every database this object created.
    """

    def __init__(self, admin_dsn: str | None = None) -> None:
        self.admin_dsn = admin_dsn or pg_admin_dsn()
        self._created: list[str] = []

    def dsn_for(self, dbname: str) -> str:
        """The admin DSN with its database replaced by `dbname`."""
        return str(psycopg2.extensions.make_dsn(self.admin_dsn, dbname=dbname))

    def _admin(self) -> psycopg2.extensions.connection:
        conn = psycopg2.connect(self.admin_dsn, connect_timeout=10)
        conn.autocommit = True  # CREATE/DROP DATABASE cannot run in a transaction
        return conn

    def fresh_database(self, prefix: str = "ganglion_test") -> str:
        """Create an empty, uniquely named database (UTF8, C collation); return its DSN."""
        name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:12]}"
        conn = self._admin()
        try:
            with conn.cursor() as cur:
                cur.execute(
                    sql.SQL(
                        "CREATE DATABASE {} ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' "
                        "TEMPLATE template0"
                    ).format(sql.Identifier(name))
                )
        finally:
            conn.close()
        self._created.append(name)
        return self.dsn_for(name)

    def database_exists(self, dbname: str) -> bool:
        conn = self._admin()
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,))
                return cur.fetchone() is not None
        finally:
            conn.close()

    def drop_database(self, dbname: str) -> None:
        """Drop `dbname`, disconnecting any sessions still using it."""
        conn = self._admin()
        try:
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = %s AND pid <> pg_backend_pid()",
                    (dbname,),
                )
                force = sql.SQL(" WITH (FORCE)" if conn.server_version >= 130000 else "")
                cur.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {}{}").format(sql.Identifier(dbname), force)
                )
        finally:
            conn.close()
        if dbname in self._created:
            self._created.remove(dbname)

    def drop_all(self) -> None:
        """Drop every database created by `fresh_database` (teardown)."""
        errors: list[BaseException] = []
        for name in list(self._created):
            try:
                self.drop_database(name)
            except psycopg2.Error as e:
                errors.append(e)
        if errors:
            raise RuntimeError(f"could not drop test databases: {errors}")


def dbname_of(dsn: str) -> str:
    """The database name in a DSN."""
    return str(psycopg2.extensions.parse_dsn(dsn)["dbname"])
