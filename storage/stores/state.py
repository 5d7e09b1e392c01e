"""Room state at any event, stored as state groups (snapshots plus bounded delta chains).

Write side: `StateGroupPersistHook` runs inside the persist transaction of every event (it
is registered with `event_persist.register_persist_hook` when this module is imported) and
maps the event to the group of the state after it. For the linear DAG that local sending
produces it knows the previous group and the one changed key, so a state event costs one
delta row and never loads the room's state, except every `max_delta_chain + 1`-th state
change in a room, which writes a full snapshot instead. When the prev_events carry
different states (a fork), the hook resolves them with the room version's state
resolution over events read from the store, and stores the result as a group of its own.

Read side: `StateStore`, usable on every process. Groups are immutable, so the store
keeps composed states in an LRU cache bounded by the number of entries, and composing an
uncached group stops at its nearest cached ancestor.

Schema: storage/schema/0002_state_groups.sql.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence

import attrs

from homeserver.events.auth_chain import MissingEventsError
from homeserver.events.event import Event, StateKey
from homeserver.events.state_res import resolve_state
from storage.database import Database, Transaction, placeholders
from storage.stores.event_persist import register_persist_hook
from storage.stores.events import EventStore

__all__ = [
    "DEFAULT_EVENT_CACHE_SIZE",
    "DEFAULT_MAX_CACHED_ENTRIES",
    "DEFAULT_MAX_DELTA_CHAIN",
    "STATE_PERSIST_HOOK",
    "StateGroupPersistHook",
    "StateNotFoundError",
    "StateStore",
    "TypeFilter",
    "configure_state_persist_hook",
]

# Deltas allowed between a group and its snapshot (limits.state_group_max_delta_chain).
DEFAULT_MAX_DELTA_CHAIN = 50
# State entries the read cache may hold in total (limits.state_cache_max_entries).
DEFAULT_MAX_CACHED_ENTRIES = 200_000
# Events whose state groups the read cache remembers (limits.state_event_cache_size).
DEFAULT_EVENT_CACHE_SIZE = 50_000

# (type, state_key) pairs to return; a state_key of None means every key of that type.
TypeFilter = Collection[tuple[str, str | None]]

# Above this many filter terms the filter is applied in Python rather than in SQL.
_MAX_SQL_FILTER_TERMS = 50
_CHUNK = 500
_INSERT_BATCH = 250
# Rounds of fetching events that state resolution reports missing, before giving up.
_MAX_RESOLUTION_FETCH_ROUNDS = 64


class StateNotFoundError(LookupError):
    """The event is unknown, or was persisted without a state group (before migration 0002)."""


@attrs.frozen(slots=True)
class _EventGroups:
    after: int
    # The group before the event; None for the empty state (before m.room.create).
    before: int | None


def _chunks(items: Sequence[int], size: int = _CHUNK) -> Iterable[Sequence[int]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


# ----------------------------------------------------------------- type filters --


@attrs.frozen(slots=True)
class _Filter:
    """A compiled `TypeFilter`."""

    whole_types: frozenset[str]
    keys: frozenset[StateKey]

    @staticmethod
    def of(types: TypeFilter) -> _Filter:
        whole = frozenset(t for t, sk in types if sk is None)
        keys = frozenset((t, sk) for t, sk in types if sk is not None and t not in whole)
        return _Filter(whole, keys)

    def matches(self, key: StateKey) -> bool:
        return key[0] in self.whole_types or key in self.keys

    def apply(self, state: Mapping[StateKey, str]) -> dict[StateKey, str]:
        if not self.whole_types:
            return {k: state[k] for k in self.keys if k in state}
        return {k: v for k, v in state.items() if self.matches(k)}

    def sql(self) -> tuple[str, list[str]]:
        """An SQL condition over `type`/`state_key` matching the filter, with its arguments."""
        terms: list[str] = []
        args: list[str] = []
        if self.whole_types:
            terms.append(f"type IN ({placeholders(len(self.whole_types))})")
            args.extend(sorted(self.whole_types))
        for t, sk in sorted(self.keys):
            terms.append("(type = ? AND state_key = ?)")
            args.extend((t, sk))
        return ("(" + " OR ".join(terms) + ")" if terms else "1 = 0"), args

    @property
    def size(self) -> int:
        return len(self.whole_types) + len(self.keys)


# ------------------------------------------------- reading groups in a transaction --


def _load_chain_parents(txn: Transaction, groups: Collection[int]) -> dict[int, int | None]:
    """group -> prev_group for the given groups and all their ancestors."""
    parents: dict[int, int | None] = {}
    for chunk in _chunks(sorted(groups)):
        for gid, prev in txn.select(
            "WITH RECURSIVE chain(id, prev_group) AS ("
            f" SELECT id, prev_group FROM state_groups WHERE id IN ({placeholders(len(chunk))})"
            " UNION"
            " SELECT g.id, g.prev_group FROM state_groups g JOIN chain c ON g.id = c.prev_group"
            ") SELECT id, prev_group FROM chain",
            list(chunk),
        ):
            parents[int(gid)] = None if prev is None else int(prev)
    return parents


def _compose_states_txn(
    txn: Transaction,
    groups: Collection[int],
    bases: Mapping[int, Mapping[StateKey, str]],
    type_filter: _Filter | None = None,
) -> dict[int, dict[StateKey, str]]:
    """The state of each group, composed from its snapshot (or nearest group in `bases`).

    `bases` holds already known full states (the read cache); a walk stops at the first
    of them it meets. With `type_filter`, only matching entries are read and returned.
    """
    wanted = [g for g in set(groups) if g not in bases]
    parents = _load_chain_parents(txn, wanted) if wanted else {}
    paths: dict[int, tuple[list[int], int | None]] = {}  # group -> (groups to apply, base)
    needed: set[int] = set()
    for group in wanted:
        path: list[int] = []
        base: int | None = None
        current: int | None = group
        while current is not None:
            if current in bases:
                base = current
                break
            if current not in parents:
                raise LookupError(f"state group {current} is missing from the database")
            path.append(current)
            current = parents[current]
        paths[group] = (path, base)
        needed.update(path)

    deltas: dict[int, list[tuple[StateKey, str | None]]] = {g: [] for g in needed}
    condition, condition_args = type_filter.sql() if type_filter is not None else ("1 = 1", [])
    for chunk in _chunks(sorted(needed)):
        for gid, etype, skey, event_id in txn.select(
            "SELECT state_group, type, state_key, event_id FROM state_group_entries"
            f" WHERE state_group IN ({placeholders(len(chunk))}) AND {condition}",
            [*chunk, *condition_args],
        ):
            deltas[int(gid)].append(((etype, skey), event_id))

    out: dict[int, dict[StateKey, str]] = {}
    for group in groups:
        if group in bases:
            base_state = bases[group]
            out[group] = type_filter.apply(base_state) if type_filter else dict(base_state)
            continue
        path, base = paths[group]
        if base is None:
            state: dict[StateKey, str] = {}
        elif type_filter is not None:
            state = type_filter.apply(bases[base])
        else:
            state = dict(bases[base])
        for gid in reversed(path):  # the snapshot (or the group above the base) first
            for key, event_id in deltas[gid]:
                if event_id is None:
                    state.pop(key, None)
                else:
                    state[key] = event_id
        out[group] = state
    return out


def _event_groups_txn(txn: Transaction, event_ids: Sequence[str]) -> dict[str, _EventGroups]:
    out: dict[str, _EventGroups] = {}
    for i in range(0, len(event_ids), _CHUNK):
        chunk = event_ids[i : i + _CHUNK]
        for event_id, state_key, after, before in txn.select(
            "SELECT e.event_id, e.state_key, m.state_group, m.state_group_before"
            " FROM events e JOIN event_state_groups m ON m.stream_ordering = e.stream_ordering"
            f" WHERE e.event_id IN ({placeholders(len(chunk))})",
            list(chunk),
        ):
            # For a non-state event the state before is the state after.
            before_group = int(before) if before is not None else None
            if state_key is None:
                before_group = int(after)
            out[event_id] = _EventGroups(int(after), before_group)
    return out


# -------------------------------------------------------------------- write side --


# Computes a complete state map, for when a group must be written as a snapshot.
_StateThunk = Callable[[], Mapping[StateKey, str | None]]


@attrs.frozen(slots=True)
class _Group:
    id: int
    chain_length: int


class StateGroupPersistHook:
    """Maps each persisted event to its state group; a persist hook (see event_persist)."""

    def __init__(self, max_delta_chain: int = DEFAULT_MAX_DELTA_CHAIN) -> None:
        if max_delta_chain < 0:
            raise ValueError("max_delta_chain must be >= 0")
        self.max_delta_chain = max_delta_chain

    def __call__(self, txn: Transaction, event: Event, stream_ordering: int) -> None:
        before = self._state_before(txn, event, stream_ordering)
        is_state = event.state_key is not None
        if is_state and not event.rejected:
            key = event.key

            def full_after() -> dict[StateKey, str | None]:
                # Only every (max_delta_chain + 1)-th state change in a room gets here.
                full: dict[StateKey, str | None] = {}
                if before is not None:
                    full.update(_compose_states_txn(txn, [before.id], {})[before.id])
                full[key] = event.event_id
                return full

            after = self._write_group(
                txn,
                2 * stream_ordering + 1,
                event.room_id,
                before,
                {key: event.event_id},
                full_after,
            )
        else:
            if before is None:
                # Only m.room.create has no prev_events; anything else gets an empty group.
                before = self._write_group(
                    txn, 2 * stream_ordering + 1, event.room_id, None, {}, dict
                )
            after = before
        txn.execute(
            "INSERT INTO event_state_groups (stream_ordering, state_group, state_group_before)"
            " VALUES (?, ?, ?)",
            (stream_ordering, after.id, before.id if is_state and before is not None else None),
        )

    def _write_group(
        self,
        txn: Transaction,
        group_id: int,
        room_id: str,
        parent: _Group | None,
        delta: Mapping[StateKey, str | None],
        full_state: _StateThunk,
    ) -> _Group:
        """Writes a group as a delta on `parent`, or as a snapshot if the chain would be too long.

        `full_state` computes the complete state, called only when a snapshot is written.
        """
        if parent is not None and parent.chain_length < self.max_delta_chain:
            group = _Group(group_id, parent.chain_length + 1)
            prev: int | None = parent.id
            rows = [(group_id, t, sk, eid) for (t, sk), eid in delta.items()]
        else:
            group = _Group(group_id, 0)
            prev = None
            state = full_state()
            rows = [(group_id, t, sk, eid) for (t, sk), eid in state.items() if eid is not None]
        txn.execute(
            "INSERT INTO state_groups (id, prev_group, chain_length, room_id) VALUES (?, ?, ?, ?)",
            (group.id, prev, group.chain_length, room_id),
        )
        # Multi-row INSERTs: a snapshot has as many rows as the room has state, and
        # psycopg2's executemany would make one round trip per row.
        for i in range(0, len(rows), _INSERT_BATCH):
            batch = rows[i : i + _INSERT_BATCH]
            txn.execute(
                "INSERT INTO state_group_entries (state_group, type, state_key, event_id) VALUES "
                + ",".join(["(?, ?, ?, ?)"] * len(batch)),
                [value for row in batch for value in row],
            )
        return group

    def _state_before(self, txn: Transaction, event: Event, stream_ordering: int) -> _Group | None:
        prev_ids = sorted(set(event.prev_event_ids))
        if not prev_ids:
            return None
        prev_groups: dict[int, _Group] = {}
        for i in range(0, len(prev_ids), _CHUNK):
            chunk = prev_ids[i : i + _CHUNK]
            for gid, chain_length in txn.select(
                "SELECT m.state_group, g.chain_length FROM events e"
                " JOIN event_state_groups m ON m.stream_ordering = e.stream_ordering"
                " JOIN state_groups g ON g.id = m.state_group"
                f" WHERE e.event_id IN ({placeholders(len(chunk))})",
                list(chunk),
            ):
                prev_groups[int(gid)] = _Group(int(gid), int(chain_length))
        group_id = 2 * stream_ordering
        if not prev_groups:
            # The prev events predate state groups (persisted before migration 0002) or are
            # unknown: this hook runs before current state is updated, so the room's current
            # state is the state before this event on a linear DAG. Start a snapshot from it.
            rows = txn.select(
                "SELECT type, state_key, event_id FROM current_state_events WHERE room_id = ?",
                (event.room_id,),
            )
            snapshot: dict[StateKey, str | None] = {(t, sk): eid for t, sk, eid in rows}
            return self._write_group(txn, group_id, event.room_id, None, {}, lambda: snapshot)
        if len(prev_groups) == 1:
            return next(iter(prev_groups.values()))
        return self._resolve_fork(txn, event, group_id, sorted(prev_groups.values(), key=_by_id))

    def _resolve_fork(
        self, txn: Transaction, event: Event, group_id: int, prev_groups: list[_Group]
    ) -> _Group:
        """Resolves the states of the prev events into a new group (a fork being merged)."""
        states = _compose_states_txn(txn, [g.id for g in prev_groups], {})
        state_sets = [states[g.id] for g in prev_groups]
        resolved = _resolve_with_store(txn, event, state_sets)
        for g in prev_groups:
            if states[g.id] == resolved:
                return g  # one side already holds the resolved state
        # Store it as a delta on the prev group it differs least from (if its chain allows).
        candidates = [g for g in prev_groups if g.chain_length < self.max_delta_chain]
        parent: _Group | None = None
        delta: dict[StateKey, str | None] = {}
        for candidate in candidates:
            candidate_delta = _diff(states[candidate.id], resolved)
            if parent is None or len(candidate_delta) < len(delta):
                parent, delta = candidate, candidate_delta
        full: dict[StateKey, str | None] = dict(resolved)
        return self._write_group(txn, group_id, event.room_id, parent, delta, lambda: full)


def _by_id(group: _Group) -> int:
    return group.id


def _diff(old: Mapping[StateKey, str], new: Mapping[StateKey, str]) -> dict[StateKey, str | None]:
    """The delta turning `old` into `new` (None marks a removed key)."""
    delta: dict[StateKey, str | None] = {k: v for k, v in new.items() if old.get(k) != v}
    delta.update({k: None for k in old if k not in new})
    return delta


def _resolve_with_store(
    txn: Transaction, event: Event, state_sets: list[dict[StateKey, str]]
) -> dict[StateKey, str]:
    """State resolution over events read from the store, fetching what it reports missing."""
    event_map: dict[str, Event] = {}
    fetched: set[str] = set()
    to_fetch: set[str] = {eid for state in state_sets for eid in state.values()}
    for _ in range(_MAX_RESOLUTION_FETCH_ROUNDS):
        found = EventStore._get_events_txn(txn, sorted(to_fetch))
        event_map.update({eid: pe.event for eid, pe in found.items()})
        fetched |= to_fetch
        try:
            return resolve_state(event.room_version, state_sets, event_map)
        except MissingEventsError as e:
            to_fetch = set(e.event_ids) - fetched
            if not to_fetch:
                raise LookupError(
                    f"cannot resolve the state before {event.event_id}: events missing from"
                    f" the store: {sorted(e.event_ids)[:10]}"
                ) from e
    raise LookupError(f"state resolution before {event.event_id} kept needing more events")


STATE_PERSIST_HOOK = StateGroupPersistHook()
register_persist_hook(STATE_PERSIST_HOOK)


def configure_state_persist_hook(*, max_delta_chain: int) -> None:
    """Sets the chain bound of the registered hook (the events writer calls this at start)."""
    if max_delta_chain < 0:
        raise ValueError("max_delta_chain must be >= 0")
    STATE_PERSIST_HOOK.max_delta_chain = max_delta_chain


# --------------------------------------------------------------------- read side --


class StateStore:
    """Room state at events. Answers from state groups; safe on every process."""

    def __init__(
        self,
        db: Database,
        *,
        max_cached_entries: int = DEFAULT_MAX_CACHED_ENTRIES,
        event_cache_size: int = DEFAULT_EVENT_CACHE_SIZE,
    ) -> None:
        self.db = db
        self.max_cached_entries = max_cached_entries
        self.event_cache_size = event_cache_size
        # Both caches are only touched on the reactor thread. Cached states are never
        # mutated: callers get copies.
        self._group_cache: OrderedDict[int, dict[StateKey, str]] = OrderedDict()
        self._cached_entries = 0
        self._event_cache: OrderedDict[str, _EventGroups] = OrderedDict()

    # ------------------------------------------------------------------ public API

    async def get_state_group_for_event(self, event_id: str) -> int | None:
        """The group of the state after the event; None if it has none."""
        groups = await self._event_groups([event_id])
        found = groups.get(event_id)
        return found.after if found is not None else None

    async def get_state_ids_after(
        self, event_id: str, types: TypeFilter | None = None
    ) -> dict[StateKey, str]:
        """The room state after the event (for a state event, including itself)."""
        groups = await self._event_groups([event_id])
        if event_id not in groups:
            raise StateNotFoundError(event_id)
        return (await self._group_states([groups[event_id].after], types))[groups[event_id].after]

    async def get_state_ids_before(
        self, event_id: str, types: TypeFilter | None = None
    ) -> dict[StateKey, str]:
        """The room state before the event: the state its prev_events resolve to."""
        groups = await self._event_groups([event_id])
        if event_id not in groups:
            raise StateNotFoundError(event_id)
        before = groups[event_id].before
        if before is None:
            return {}
        return (await self._group_states([before], types))[before]

    async def get_state_ids_after_many(
        self, event_ids: Collection[str], types: TypeFilter | None = None
    ) -> dict[str, dict[StateKey, str]]:
        """The state after each event; unknown events (or without state) are left out.

        Each distinct group is composed once, however many events share it.
        """
        groups = await self._event_groups(list(dict.fromkeys(event_ids)))
        states = await self._group_states({g.after for g in groups.values()}, types)
        return {eid: dict(states[g.after]) for eid, g in groups.items()}

    # ------------------------------------------------------------------- internals

    async def _event_groups(self, event_ids: Sequence[str]) -> dict[str, _EventGroups]:
        out: dict[str, _EventGroups] = {}
        missing: list[str] = []
        for event_id in event_ids:
            cached = self._event_cache.get(event_id)
            if cached is None:
                missing.append(event_id)
            else:
                self._event_cache.move_to_end(event_id)
                out[event_id] = cached
        if missing:
            found = await self.db.run("get_event_state_groups", _event_groups_txn, missing)
            for event_id, groups in found.items():
                out[event_id] = groups
                self._event_cache[event_id] = groups
            while len(self._event_cache) > self.event_cache_size:
                self._event_cache.popitem(last=False)
        return out

    async def _group_states(
        self, groups: Collection[int], types: TypeFilter | None
    ) -> dict[int, dict[StateKey, str]]:
        type_filter = _Filter.of(types) if types is not None else None
        out: dict[int, dict[StateKey, str]] = {}
        misses: list[int] = []
        for group in groups:
            cached = self._group_cache.get(group)
            if cached is None:
                misses.append(group)
                continue
            self._group_cache.move_to_end(group)
            out[group] = type_filter.apply(cached) if type_filter else dict(cached)
        if not misses:
            return out
        # Small filters are pushed into SQL and their results not cached; otherwise whole
        # states are composed, cached, and filtered here.
        sql_filter = (
            type_filter
            if type_filter is not None and type_filter.size <= _MAX_SQL_FILTER_TERMS
            else None
        )
        # A shallow copy: the transaction runs on a pool thread while the reactor may
        # change the cache; the states themselves are never mutated.
        bases = dict(self._group_cache)
        composed = await self.db.run(
            "get_state_groups", _compose_states_txn, misses, bases, sql_filter
        )
        for group, state in composed.items():
            if sql_filter is None:
                self._cache_put(group, state)
                out[group] = type_filter.apply(state) if type_filter else dict(state)
            else:
                out[group] = state
        return out

    def _cache_put(self, group: int, state: dict[StateKey, str]) -> None:
        if len(state) > self.max_cached_entries or group in self._group_cache:
            return
        self._group_cache[group] = state
        self._cached_entries += len(state)
        while self._cached_entries > self.max_cached_entries:
            _, evicted = self._group_cache.popitem(last=False)
            self._cached_entries -= len(evicted)
