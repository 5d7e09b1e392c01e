"""Writing the events stream: only the stream's writer process constructs this store."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence

from homeserver.events.event import Event
from storage.database import Database, Transaction

# Called inside the persist transaction, after the event row is written and before the
# room's current state is updated (so a hook can still read the state being replaced).
# Feature stores (relations, redactions, state groups, …) keep their tables in step here.
PersistHook = Callable[[Transaction, Event, int], None]
PERSIST_HOOKS: list[PersistHook] = []


def register_persist_hook(hook: PersistHook) -> PersistHook:
    if hook not in PERSIST_HOOKS:
        PERSIST_HOOKS.append(hook)
    return hook


class EventPersistStore:
    def __init__(self, db: Database, hooks: Sequence[PersistHook] | None = None) -> None:
        self.db = db
        # None: the hooks registered by the feature modules loaded in this process.
        self._hooks = hooks

    async def persist_event(
        self,
        event: Event,
        stream_ordering: int,
        now_ms: int,
        *,
        new_room_creator: str | None = None,
        txn: tuple[str, str, str] | None = None,
    ) -> None:
        await self.db.run(
            "persist_event",
            self._persist_txn,
            event,
            stream_ordering,
            now_ms,
            new_room_creator,
            txn,
            PERSIST_HOOKS if self._hooks is None else self._hooks,
        )

    @staticmethod
    def _persist_txn(
        t: Transaction,
        event: Event,
        stream_ordering: int,
        now_ms: int,
        new_room_creator: str | None,
        client_txn: tuple[str, str, str] | None,
        hooks: Sequence[PersistHook],
    ) -> None:
        room_id = event.room_id
        if new_room_creator is not None:
            t.execute(
                "INSERT INTO rooms (room_id, room_version, creator, created_ts)"
                " VALUES (?, ?, ?, ?)",
                (room_id, event.room_version.identifier, new_room_creator, now_ms),
            )
        membership = event.membership if event.type == "m.room.member" else None
        t.execute(
            "INSERT INTO events (stream_ordering, event_id, room_id, type, state_key, sender,"
            " depth, origin_server_ts, received_ts, membership, pdu,"
            " txn_user_id, txn_device_id, txn_id)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                stream_ordering,
                event.event_id,
                room_id,
                event.type,
                event.state_key,
                event.sender,
                event.depth,
                event.origin_server_ts,
                now_ms,
                membership,
                json.dumps(event.pdu, separators=(",", ":"), ensure_ascii=False),
                client_txn[0] if client_txn else None,
                client_txn[1] if client_txn else None,
                client_txn[2] if client_txn else None,
            ),
        )
        prevs = event.prev_event_ids
        t.execute_many(
            "INSERT INTO event_edges (event_id, prev_event_id) VALUES (?, ?)",
            [(event.event_id, p) for p in prevs],
        )
        t.execute_many(
            "INSERT INTO event_auth (event_id, auth_event_id) VALUES (?, ?)",
            [(event.event_id, a) for a in event.auth_event_ids],
        )
        t.execute_many(
            "DELETE FROM forward_extremities WHERE room_id = ? AND event_id = ?",
            [(room_id, p) for p in prevs],
        )
        t.execute(
            "INSERT INTO forward_extremities (room_id, event_id) VALUES (?, ?)",
            (room_id, event.event_id),
        )
        for hook in hooks:
            hook(t, event, stream_ordering)
        if event.state_key is not None:
            t.execute(
                "DELETE FROM current_state_events WHERE room_id = ? AND type = ? AND state_key = ?",
                (room_id, event.type, event.state_key),
            )
            t.execute(
                "INSERT INTO current_state_events (room_id, type, state_key, event_id, membership)"
                " VALUES (?, ?, ?, ?, ?)",
                (room_id, event.type, event.state_key, event.event_id, membership),
            )
            if membership is not None:
                t.execute(
                    "INSERT INTO room_memberships (event_id, user_id, sender, room_id, membership,"
                    " stream_ordering) VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        event.event_id,
                        event.state_key,
                        event.sender,
                        room_id,
                        membership,
                        stream_ordering,
                    ),
                )
        if client_txn is not None:
            t.execute(
                "INSERT INTO event_txn_ids (user_id, device_id, txn_id, event_id, inserted_ts)"
                " VALUES (?, ?, ?, ?, ?)",
                (*client_txn, event.event_id, now_ms),
            )
