#!/usr/bin/env python3
"""Database bytes per room state change with state groups (storage/stores/state.py).

    .venv/bin/python bench/state_storage.py [--admin-dsn DSN] [--members 1000]
        [--messages 10000] [--max-delta-chain 50] [--json out.json] [--keep]

Creates a fresh PostgreSQL database (admin DSN from --admin-dsn, else
GANGLION_TEST_PG_DSN, else the local postgres superuser), applies the schema, and builds
one v12 room through the storage API the events writer uses (EventPersistStore with the
registered persist hooks, so the state persist hook runs in every persist transaction
exactly as in the server): the create event, the creator's join, power levels and join
rules, then `--members` joins (the state changes) interleaved evenly with `--messages`
messages. Events are signed like real ones and persisted one at a time (one transaction
each), the way the single events writer persists a room's events.

Why the store API and not HTTP: the figure measured is what the persist transaction
writes, and the HTTP path ends in the same transaction; going through HTTP would spend
most of the time budget on registering 1,000 accounts (bcrypt) and request handling.

Reported: pg_total_relation_size (heap + indexes + TOAST) of the three state tables, per
state change and per event; the whole database size (pg_database_size, which includes
PostgreSQL's own catalogs) and the size of all tables, per event; and, for contrast, what
a full snapshot per state change takes (measured: the rows are materialised in a scratch
table with the same columns and index) and per event (extrapolated from the measured
bytes per snapshot entry). Also the persist rate and a cold read of the final state.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.extensions
from psycopg2 import sql
from signedjson.key import generate_signing_key
from twisted.internet import defer, task

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from homeserver.events.auth import auth_types_for_event  # noqa: E402
from homeserver.events.builder import build_event, room_id_for_create_event  # noqa: E402
from homeserver.events.event import Event, StateKey  # noqa: E402
from homeserver.events.room_versions import KNOWN_ROOM_VERSIONS  # noqa: E402
from storage.database import Database  # noqa: E402
from storage.migrations import prepare_database  # noqa: E402
from storage.stores.event_persist import EventPersistStore  # noqa: E402
from storage.stores.state import StateStore, configure_state_persist_hook  # noqa: E402
from workers.config import DatabaseConfig  # noqa: E402

SERVER = "bench.test"
CREATOR = f"@creator:{SERVER}"
RV = KNOWN_ROOM_VERSIONS["12"]
STATE_TABLES = ("state_groups", "state_group_entries", "event_state_groups")
DEFAULT_ADMIN_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"


class RoomBuilder:
    """Builds and persists a linear room, tracking its state for auth events."""

    def __init__(self, persist: EventPersistStore) -> None:
        self.persist = persist
        self.key = generate_signing_key("bench")
        self.room_id = ""
        self.state: dict[StateKey, str] = {}
        self.prev: list[str] = []
        self.depth = 0
        self.stream = 0
        self.now = 1_700_000_000_000
        self.state_changes = 0
        self.events = 0
        # Sum over events of the state size after each, for the per-event contrast.
        self.state_entries_after_events = 0

    async def send(
        self, type: str, content: dict[str, Any], sender: str, state_key: str | None = None
    ) -> Event:
        auth_keys = auth_types_for_event(RV, type, sender, state_key, content)
        event = build_event(
            RV,
            sender=sender,
            type=type,
            content=content,
            server_name=SERVER,
            signing_key=self.key,
            origin_server_ts=self.now + self.stream,
            depth=self.depth + 1,
            prev_event_ids=self.prev,
            auth_event_ids=[self.state[k] for k in auth_keys if k in self.state],
            room_id=self.room_id or None,
            state_key=state_key,
        )
        self.stream += 1
        creator = sender if type == "m.room.create" else None
        await self.persist.persist_event(
            event, self.stream, self.now + self.stream, new_room_creator=creator
        )
        if type == "m.room.create":
            self.room_id = room_id_for_create_event(event)
        self.prev = [event.event_id]
        self.depth += 1
        self.events += 1
        if state_key is not None:
            self.state[(type, state_key)] = event.event_id
            self.state_changes += 1
        self.state_entries_after_events += len(self.state)
        return event


def _admin_connect(dsn: str) -> psycopg2.extensions.connection:
    conn = psycopg2.connect(dsn, connect_timeout=10)
    conn.autocommit = True
    return conn


def _sizes(dsn: str, room_id: str) -> dict[str, Any]:
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            out: dict[str, Any] = {"tables": {}}
            for table in STATE_TABLES:
                cur.execute(
                    "SELECT pg_total_relation_size(%s::regclass), (SELECT COUNT(*) FROM "
                    + table
                    + ")",
                    (table,),
                )
                size, rows = cur.fetchone()  # type: ignore[misc]
                out["tables"][table] = {"bytes": int(size), "rows": int(rows)}
            cur.execute("SELECT pg_database_size(current_database())")
            out["database_bytes"] = int(cur.fetchone()[0])  # type: ignore[index]
            cur.execute(
                "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0) FROM pg_class c"
                " JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE c.relkind = 'r' AND n.nspname = current_schema()"
            )
            out["all_tables_bytes"] = int(cur.fetchone()[0])  # type: ignore[index]
            cur.execute(
                "SELECT pg_total_relation_size('events'::regclass)"
                " + pg_total_relation_size('event_edges'::regclass)"
                " + pg_total_relation_size('event_auth'::regclass)"
            )
            out["events_tables_bytes"] = int(cur.fetchone()[0])  # type: ignore[index]

            # Contrast: a full snapshot per state change, materialised with the same columns
            # and index as state_group_entries. In this room no key is set twice, so the
            # state after the k-th state event is every state event up to it.
            cur.execute(
                "CREATE TABLE bench_full_snapshots AS"
                " SELECT s.stream_ordering AS state_group, e.type, e.state_key, e.event_id"
                " FROM events s JOIN events e ON e.room_id = s.room_id"
                " AND e.state_key IS NOT NULL AND e.stream_ordering <= s.stream_ordering"
                " WHERE s.room_id = %s AND s.state_key IS NOT NULL",
                (room_id,),
            )
            cur.execute(
                "CREATE INDEX bench_full_snapshots_group ON bench_full_snapshots (state_group)"
            )
            cur.execute(
                "SELECT pg_total_relation_size('bench_full_snapshots'::regclass),"
                " (SELECT COUNT(*) FROM bench_full_snapshots)"
            )
            size, rows = cur.fetchone()  # type: ignore[misc]
            out["full_snapshot_per_state_change"] = {"bytes": int(size), "rows": int(rows)}
            cur.execute("DROP TABLE bench_full_snapshots")
        return out
    finally:
        conn.close()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    admin_dsn = args.admin_dsn or os.environ.get("GANGLION_TEST_PG_DSN") or DEFAULT_ADMIN_DSN
    dbname = f"ganglion_bench_state_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin = _admin_connect(admin_dsn)
    with admin.cursor() as cur:
        cur.execute(
            sql.SQL(
                "CREATE DATABASE {} ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0"
            ).format(sql.Identifier(dbname))
        )
    dsn = str(psycopg2.extensions.make_dsn(admin_dsn, dbname=dbname))
    db = Database(DatabaseConfig(engine="psycopg2", postgres_dsn=dsn, cp_min=1, cp_max=2))
    try:
        await prepare_database(db)
        configure_state_persist_hook(max_delta_chain=args.max_delta_chain)
        room = RoomBuilder(EventPersistStore(db))
        started = time.perf_counter()
        await room.send("m.room.create", {"room_version": "12"}, CREATOR, "")
        await room.send("m.room.member", {"membership": "join"}, CREATOR, CREATOR)
        await room.send(
            "m.room.power_levels", {"users": {CREATOR: 100}, "users_default": 0}, CREATOR, ""
        )
        await room.send("m.room.join_rules", {"join_rule": "public"}, CREATOR, "")
        members = [f"@member{i:05d}:{SERVER}" for i in range(args.members)]
        per_join = args.messages / max(1, args.members)
        sent_messages = 0
        for i, user in enumerate(members):
            await room.send(
                "m.room.member", {"membership": "join", "displayname": f"M {i}"}, user, user
            )
            while sent_messages < round((i + 1) * per_join):
                sender = members[sent_messages % (i + 1)]
                body = {"msgtype": "m.text", "body": f"message {sent_messages} in the bench room"}
                await room.send("m.room.message", body, sender)
                sent_messages += 1
            if args.progress and (i + 1) % 100 == 0:
                print(f"  {i + 1} joins, {room.events} events", file=sys.stderr)
        while sent_messages < args.messages:
            body = {"msgtype": "m.text", "body": f"message {sent_messages} in the bench room"}
            await room.send("m.room.message", body, CREATOR)
            sent_messages += 1
        persist_seconds = time.perf_counter() - started

        # A cold read of the final state: one snapshot plus at most max_delta_chain deltas.
        last = room.prev[0]
        store = StateStore(db)
        t0 = time.perf_counter()
        final = await store.get_state_ids_after(last)
        cold_read_ms = (time.perf_counter() - t0) * 1000
        assert final == room.state, "state after the last event differs from the replay"
        t0 = time.perf_counter()
        await store.get_state_ids_after(last, [("m.room.member", members[0])])
        warm_filtered_ms = (time.perf_counter() - t0) * 1000
    finally:
        db.close()

    try:
        sizes = _sizes(dsn, room.room_id)
    finally:
        if not args.keep:
            with admin.cursor() as cur:
                cur.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(dbname)))
        admin.close()

    changes, events = room.state_changes, room.events
    tables = sizes["tables"]
    groups_bytes = tables["state_groups"]["bytes"] + tables["state_group_entries"]["bytes"]
    mapping_bytes = tables["event_state_groups"]["bytes"]
    state_bytes = groups_bytes + mapping_bytes
    full = sizes["full_snapshot_per_state_change"]
    bytes_per_full_entry = full["bytes"] / full["rows"]
    return {
        "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} CPUs,"
        f" {platform.system()} {platform.release()}",
        "postgres_version": _server_version(admin_dsn),
        "date": time.strftime("%Y-%m-%d"),
        "max_delta_chain": args.max_delta_chain,
        "events": events,
        "state_changes": changes,
        "messages": sent_messages,
        "final_state_size": len(room.state),
        "tables": tables,
        "state_tables_bytes": state_bytes,
        "state_bytes_per_state_change": round(state_bytes / changes),
        "group_tables_bytes_per_state_change": round(groups_bytes / changes),
        "mapping_bytes_per_event": round(mapping_bytes / events),
        "database_bytes": sizes["database_bytes"],
        "database_bytes_per_event": round(sizes["database_bytes"] / events),
        "all_tables_bytes": sizes["all_tables_bytes"],
        "all_tables_bytes_per_event": round(sizes["all_tables_bytes"] / events),
        "events_tables_bytes_per_event": round(sizes["events_tables_bytes"] / events),
        "contrast_full_snapshot_per_state_change_bytes": full["bytes"],
        "contrast_full_snapshot_per_state_change_bytes_per_change": round(full["bytes"] / changes),
        "contrast_full_snapshot_per_event_bytes_extrapolated": round(
            bytes_per_full_entry * room.state_entries_after_events
        ),
        "persist_seconds": round(persist_seconds, 1),
        "persist_events_per_second": round(events / persist_seconds),
        "cold_read_final_state_ms": round(cold_read_ms, 1),
        "cached_filtered_read_ms": round(warm_filtered_ms, 2),
    }


def _server_version(dsn: str) -> str:
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW server_version")
            return str(cur.fetchone()[0])  # type: ignore[index]
    finally:
        conn.close()


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--admin-dsn", help="PostgreSQL DSN of a role that may create databases")
    ap.add_argument("--members", type=int, default=1000)
    ap.add_argument("--messages", type=int, default=10_000)
    ap.add_argument("--max-delta-chain", type=int, default=50)
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--keep", action="store_true", help="keep the bench database")
    ap.add_argument("--progress", action="store_true")
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)

    async def go(_reactor: Any) -> None:
        result = await run(args)
        text = json.dumps(result, indent=2)
        print(text)
        if args.json:
            args.json.write_text(text + "\n")

    task.react(lambda r: defer.ensureDeferred(go(r)))


if __name__ == "__main__":
    main()
