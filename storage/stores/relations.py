"""Relations (`m.relates_to`), redactions and replaced state: written by a persist hook,
read by the relations API and the event serializer. Usable on every process."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

import attrs

from homeserver.events.event import Event
from storage.database import Database, Transaction, placeholders
from storage.stores.event_persist import register_persist_hook

THREAD = "m.thread"
REPLACE = "m.replace"
REFERENCE = "m.reference"
ANNOTATION = "m.annotation"

# Rows per `IN (...)` list, well under SQLite's and PostgreSQL's parameter limits.
_CHUNK = 500


@attrs.frozen(slots=True)
class Relation:
    """A well-formed `m.relates_to` with a `rel_type` (replies carry none and are not relations)."""

    rel_type: str
    parent_id: str
    key: str | None = None


def parse_relation(content: Mapping[str, Any]) -> Relation | None:
    relates_to = content.get("m.relates_to")
    if not isinstance(relates_to, Mapping):
        return None
    rel_type, parent_id = relates_to.get("rel_type"), relates_to.get("event_id")
    if not isinstance(rel_type, str) or not rel_type or len(rel_type) > 255:
        return None
    if not isinstance(parent_id, str) or not parent_id.startswith("$") or len(parent_id) > 255:
        return None
    key = relates_to.get("key")
    return Relation(rel_type, parent_id, key if isinstance(key, str) else None)


def is_valid_replacement_alone(event: Event, relation: Relation) -> bool:
    """The edit-side rules of a valid replacement (the rest compare it with the original)."""
    if relation.rel_type != REPLACE or event.state_key is not None:
        return False
    # An encrypted edit carries m.new_content inside its ciphertext.
    return event.type == "m.room.encrypted" or isinstance(
        event.content.get("m.new_content"), Mapping
    )


def _chunks(ids: Collection[str]) -> list[list[str]]:
    items = list(dict.fromkeys(ids))
    return [items[i : i + _CHUNK] for i in range(0, len(items), _CHUNK)]


# ------------------------------------------------------------------ write side --


def persist_relations_hook(txn: Transaction, event: Event, stream_ordering: int) -> None:
    """Keeps event_relations, thread_roots, redactions and state_replacements in step.

    Runs before current state is updated, so the state being replaced is still current.
    """
    room_id = event.room_id
    if event.type == "m.room.redaction":
        target = event.redacts
        if target is not None:
            txn.execute(
                "INSERT INTO redactions (event_id, redacts, room_id, stream_ordering)"
                " VALUES (?, ?, ?, ?)",
                (event.event_id, target, room_id, stream_ordering),
            )
            _unrelate(txn, target, room_id)

    if event.state_key is not None:
        row = txn.select_one(
            "SELECT event_id FROM current_state_events"
            " WHERE room_id = ? AND type = ? AND state_key = ?",
            (room_id, event.type, event.state_key),
        )
        if row is not None and row[0] != event.event_id:
            txn.execute(
                "INSERT INTO state_replacements (event_id, replaces_event_id) VALUES (?, ?)",
                (event.event_id, row[0]),
            )

    relation = parse_relation(event.content)
    if relation is None or relation.parent_id == event.event_id:
        return
    # A redaction that arrived first (possible over federation) already broke the relation.
    if txn.select_one(
        "SELECT 1 FROM redactions WHERE redacts = ? AND room_id = ?", (event.event_id, room_id)
    ):
        return
    txn.execute(
        "INSERT INTO event_relations (event_id, relates_to_id, rel_type, room_id, sender, type,"
        " aggregation_key, stream_ordering, origin_server_ts, is_valid_replacement)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            event.event_id,
            relation.parent_id,
            relation.rel_type,
            room_id,
            event.sender,
            event.type,
            relation.key,
            stream_ordering,
            event.origin_server_ts,
            1 if is_valid_replacement_alone(event, relation) else 0,
        ),
    )
    if relation.rel_type == THREAD:
        _refresh_thread(txn, room_id, relation.parent_id)


def _unrelate(txn: Transaction, child_id: str, room_id: str) -> None:
    row = txn.select_one(
        "SELECT relates_to_id, rel_type FROM event_relations WHERE event_id = ? AND room_id = ?",
        (child_id, room_id),
    )
    if row is None:
        return
    txn.execute("DELETE FROM event_relations WHERE event_id = ?", (child_id,))
    if row[1] == THREAD:
        _refresh_thread(txn, room_id, row[0])


def _refresh_thread(txn: Transaction, room_id: str, root_id: str) -> None:
    latest = txn.select_one(
        "SELECT event_id, stream_ordering FROM event_relations"
        " WHERE relates_to_id = ? AND rel_type = ? AND room_id = ?"
        " ORDER BY stream_ordering DESC LIMIT 1",
        (root_id, THREAD, room_id),
    )
    txn.execute(
        "DELETE FROM thread_roots WHERE room_id = ? AND root_event_id = ?", (room_id, root_id)
    )
    if latest is not None:
        txn.execute(
            "INSERT INTO thread_roots"
            " (room_id, root_event_id, latest_event_id, latest_stream_ordering)"
            " VALUES (?, ?, ?, ?)",
            (room_id, root_id, latest[0], latest[1]),
        )


def register_hooks() -> None:
    register_persist_hook(persist_relations_hook)


# ------------------------------------------------------------------- read side --


@attrs.frozen(slots=True)
class ThreadSummary:
    count: int
    latest_event_id: str | None
    # Whether the user sent an m.thread child (the root's sender is checked by the caller).
    user_replied: bool


@attrs.frozen(slots=True)
class BundleData:
    """What the bundled aggregations of a batch of parent events need, by parent ID."""

    latest_edit: dict[str, str] = attrs.field(factory=dict)
    threads: dict[str, ThreadSummary] = attrs.field(factory=dict)
    references: dict[str, list[str]] = attrs.field(factory=dict)


class RelationsStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def get_redactions(self, event_ids: Collection[str]) -> dict[str, list[tuple[str, str]]]:
        """target -> [(redaction event ID, room ID)], oldest first."""
        if not event_ids:
            return {}

        def txn_fn(txn: Transaction) -> dict[str, list[tuple[str, str]]]:
            out: dict[str, list[tuple[str, str]]] = {}
            for chunk in _chunks(event_ids):
                for target, redaction_id, room_id in txn.select(
                    "SELECT redacts, event_id, room_id FROM redactions"
                    f" WHERE redacts IN ({placeholders(len(chunk))}) ORDER BY stream_ordering",
                    chunk,
                ):
                    out.setdefault(target, []).append((redaction_id, room_id))
            return out

        return await self.db.run("get_redactions", txn_fn)

    async def get_replaced_state(self, event_ids: Collection[str]) -> dict[str, str]:
        """state event -> the state event it replaced."""
        if not event_ids:
            return {}

        def txn_fn(txn: Transaction) -> dict[str, str]:
            out: dict[str, str] = {}
            for chunk in _chunks(event_ids):
                for eid, replaced in txn.select(
                    "SELECT event_id, replaces_event_id FROM state_replacements"
                    f" WHERE event_id IN ({placeholders(len(chunk))})",
                    chunk,
                ):
                    out[eid] = replaced
            return out

        return await self.db.run("get_replaced_state", txn_fn)

    async def get_bundle_data(self, parent_ids: Collection[str], user_id: str | None) -> BundleData:
        """Latest valid edit, thread summary and references of each parent, in one transaction.

        Children count only when they are in the parent's room. The edit must also come
        from the parent's sender with the parent's type, and the parent must not be state.
        """
        if not parent_ids:
            return BundleData()

        def txn_fn(txn: Transaction) -> BundleData:
            data = BundleData()
            for chunk in _chunks(parent_ids):
                marks = placeholders(len(chunk))
                for parent, edit in txn.select(
                    "SELECT relates_to_id, event_id FROM ("
                    " SELECT r.relates_to_id, r.event_id, ROW_NUMBER() OVER ("
                    "  PARTITION BY r.relates_to_id"
                    "  ORDER BY r.origin_server_ts DESC, r.event_id DESC"
                    " ) AS n FROM event_relations r JOIN events p ON p.event_id = r.relates_to_id"
                    f" WHERE r.relates_to_id IN ({marks}) AND r.rel_type = ?"
                    " AND r.is_valid_replacement = 1"
                    " AND p.room_id = r.room_id AND p.sender = r.sender AND p.type = r.type"
                    " AND p.state_key IS NULL"
                    ") ranked WHERE n = 1",
                    [*chunk, REPLACE],
                ):
                    data.latest_edit[parent] = edit
                counts: dict[str, int] = {}
                for parent, count in txn.select(
                    "SELECT r.relates_to_id, COUNT(*) FROM event_relations r"
                    " JOIN events p ON p.event_id = r.relates_to_id AND p.room_id = r.room_id"
                    f" WHERE r.relates_to_id IN ({marks}) AND r.rel_type = ?"
                    " GROUP BY r.relates_to_id",
                    [*chunk, THREAD],
                ):
                    counts[parent] = int(count)
                if counts:
                    roots = list(counts)
                    root_marks = placeholders(len(roots))
                    latest = dict(
                        txn.select(
                            "SELECT t.root_event_id, t.latest_event_id FROM thread_roots t"
                            " JOIN events p"
                            " ON p.event_id = t.root_event_id AND p.room_id = t.room_id"
                            f" WHERE t.root_event_id IN ({root_marks})",
                            roots,
                        )
                    )
                    replied: set[str] = set()
                    if user_id is not None:
                        replied = {
                            r[0]
                            for r in txn.select(
                                "SELECT DISTINCT relates_to_id FROM event_relations"
                                f" WHERE relates_to_id IN ({root_marks})"
                                " AND rel_type = ? AND sender = ?",
                                [*roots, THREAD, user_id],
                            )
                        }
                    for root, count in counts.items():
                        data.threads[root] = ThreadSummary(count, latest.get(root), root in replied)
                for parent, child in txn.select(
                    "SELECT r.relates_to_id, r.event_id FROM event_relations r"
                    " JOIN events p ON p.event_id = r.relates_to_id AND p.room_id = r.room_id"
                    f" WHERE r.relates_to_id IN ({marks}) AND r.rel_type = ?"
                    " ORDER BY r.stream_ordering",
                    [*chunk, REFERENCE],
                ):
                    data.references.setdefault(parent, []).append(child)
            return data

        return await self.db.run("get_bundle_data", txn_fn)

    async def get_children(
        self,
        parent_id: str,
        room_id: str,
        *,
        rel_type: str | None,
        event_type: str | None,
        after: int,
        up_to: int,
        newest_first: bool,
        limit: int,
        depth: int,
    ) -> list[tuple[str, int]]:
        """(event_id, stream_ordering) of children in (after, up_to], up to `depth` levels down.

        The filters apply at every level: a grandchild reached only through a child that
        does not match is left out.
        """
        filters, filter_args = "", []
        if rel_type is not None:
            filters += " AND r.rel_type = ?"
            filter_args.append(rel_type)
        if event_type is not None:
            filters += " AND r.type = ?"
            filter_args.append(event_type)
        order = "DESC" if newest_first else "ASC"
        sql = (
            "WITH RECURSIVE tree (event_id, stream_ordering, depth) AS ("
            " SELECT r.event_id, r.stream_ordering, 1 FROM event_relations r"
            f" WHERE r.relates_to_id = ? AND r.room_id = ?{filters}"
            " UNION ALL"
            " SELECT r.event_id, r.stream_ordering, tree.depth + 1 FROM event_relations r"
            " JOIN tree ON r.relates_to_id = tree.event_id"
            f" WHERE tree.depth < ? AND r.room_id = ?{filters}"
            ")"
            " SELECT DISTINCT event_id, stream_ordering FROM tree"
            " WHERE stream_ordering > ? AND stream_ordering <= ?"
            f" ORDER BY stream_ordering {order} LIMIT ?"
        )
        args = [parent_id, room_id, *filter_args, depth, room_id, *filter_args, after, up_to, limit]
        rows = await self.db.select("get_relation_children", sql, args)
        return [(r[0], int(r[1])) for r in rows]

    async def get_thread_roots(
        self, room_id: str, *, before: int, up_to: int, participant: str | None, limit: int
    ) -> list[tuple[str, int]]:
        """(root event ID, latest thread event position), latest first, with the latest
        position < before and <= up_to; only threads `participant` took part in if given."""
        sql = (
            "SELECT t.root_event_id, t.latest_stream_ordering FROM thread_roots t"
            " JOIN events p ON p.event_id = t.root_event_id AND p.room_id = t.room_id"
            " WHERE t.room_id = ?"
            " AND t.latest_stream_ordering < ? AND t.latest_stream_ordering <= ?"
        )
        args: list[Any] = [room_id, before, up_to]
        if participant is not None:
            sql += (
                " AND (p.sender = ? OR EXISTS (SELECT 1 FROM event_relations r"
                " WHERE r.relates_to_id = t.root_event_id AND r.rel_type = ? AND r.sender = ?))"
            )
            args += [participant, THREAD, participant]
        sql += " ORDER BY t.latest_stream_ordering DESC LIMIT ?"
        args.append(limit)
        rows = await self.db.select("get_thread_roots", sql, args)
        return [(r[0], int(r[1])) for r in rows]

    async def has_annotation(
        self, parent_id: str, room_id: str, sender: str, event_type: str, key: str
    ) -> bool:
        rows = await self.db.select(
            "has_annotation",
            "SELECT 1 FROM event_relations WHERE relates_to_id = ? AND rel_type = ? AND room_id = ?"
            " AND sender = ? AND type = ? AND aggregation_key = ? LIMIT 1",
            (parent_id, ANNOTATION, room_id, sender, event_type, key),
        )
        return bool(rows)

    async def get_membership_history(
        self, user_id: str, room_ids: Collection[str], up_to: int
    ) -> dict[str, list[tuple[int, str]]]:
        """room -> [(stream_ordering, membership)] of the user's membership events, oldest first."""
        if not room_ids:
            return {}

        def txn_fn(txn: Transaction) -> dict[str, list[tuple[int, str]]]:
            out: dict[str, list[tuple[int, str]]] = {}
            for chunk in _chunks(room_ids):
                for room_id, pos, membership in txn.select(
                    "SELECT room_id, stream_ordering, membership FROM room_memberships"
                    " WHERE user_id = ? AND stream_ordering <= ?"
                    f" AND room_id IN ({placeholders(len(chunk))})"
                    " ORDER BY stream_ordering",
                    [user_id, up_to, *chunk],
                ):
                    out.setdefault(room_id, []).append((int(pos), membership))
            return out

        return await self.db.run("get_membership_history", txn_fn)
