"""State resolution: algorithm v1 (room version 1), v2 (2–11) and v2.1 (12).

Pure and deterministic: given the state sets to resolve and every event they
(and their auth chains) reference, :func:`resolve_state` returns the resolved
state map. The result does not depend on the order of the state sets or on the
iteration order of any mapping passed in. Events that are needed but missing from
``event_map`` are reported through :class:`MissingEventsError` (all found at
once), so that an I/O layer can fetch them and call again.

Authorisation is delegated to :mod:`homeserver.events.auth` (imported lazily);
``auth_checker`` replaces its ``check_auth_rules`` when given.
"""

from __future__ import annotations

import hashlib
import heapq
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

import attrs

from homeserver.events.auth_chain import AuthChainIndex, MissingEventsError
from homeserver.events.event import Event, StateKey
from homeserver.events.room_versions import RoomVersion, StateResolutionAlgorithm

__all__ = [
    "AuthChainIndex",
    "AuthChecker",
    "MissingEventsError",
    "StateMap",
    "is_power_event",
    "resolve_state",
]

StateMap = Mapping[tuple[str, str], str]  # (type, state_key) -> event_id
AuthChecker = Callable[[Event, Mapping[StateKey, Event]], None]

_CREATE: StateKey = ("m.room.create", "")
_POWER_LEVELS: StateKey = ("m.room.power_levels", "")
_JOIN_RULES: StateKey = ("m.room.join_rules", "")
_MEMBER = "m.room.member"

PowerLevel = int | float


class _AuthTypesFn(Protocol):
    def __call__(
        self,
        room_version: RoomVersion,
        event_type: str,
        sender: str,
        state_key: str | None,
        content: Mapping[str, Any],
        /,
    ) -> Iterable[tuple[str, str]]: ...


@attrs.frozen
class _AuthApi:
    """The slice of the auth-rules module that state resolution needs."""

    check: AuthChecker
    auth_types: _AuthTypesFn
    power_level: Callable[[str, Mapping[StateKey, Event]], PowerLevel]
    error: type[Exception]


def _load_auth_api(auth_checker: AuthChecker | None) -> _AuthApi:
    from homeserver.events import auth  # lazy: keeps this module importable on its own

    return _AuthApi(
        check=auth_checker if auth_checker is not None else auth.check_auth_rules,
        auth_types=auth.auth_types_for_event,
        power_level=auth.get_user_power_level,
        error=auth.AuthError,
    )


def is_power_event(event: Event) -> bool:
    """Power levels, join rules, and kicks/bans (leave or ban of someone else)."""
    if not event.is_state():
        return False
    if event.type in ("m.room.power_levels", "m.room.join_rules"):
        return True
    return (
        event.type == _MEMBER
        and event.membership in ("leave", "ban")
        and event.sender != event.state_key
    )


def resolve_state(
    room_version: RoomVersion,
    state_sets: Sequence[StateMap],
    event_map: Mapping[str, Event],
    *,
    auth_checker: AuthChecker | None = None,
    auth_chain_index: AuthChainIndex | None = None,
) -> dict[tuple[str, str], str]:
    """Resolve ``state_sets`` with the algorithm of ``room_version``.

    ``event_map`` must hold every event referenced by the state sets and their
    auth chains, otherwise :class:`MissingEventsError` is raised.
    ``auth_chain_index`` may be passed to reuse memoized auth-graph work across
    calls over the same event map.
    """
    if not state_sets:
        return {}
    first = state_sets[0]
    if all(s == first for s in state_sets[1:]):
        return dict(first)
    index = auth_chain_index if auth_chain_index is not None else AuthChainIndex(event_map)
    if index.event_map is not event_map:
        raise ValueError("auth_chain_index was built over a different event map")
    ctx = _Context(room_version, state_sets, index, _load_auth_api(auth_checker))
    if room_version.state_res is StateResolutionAlgorithm.V1:
        return _resolve_v1(ctx)
    return _resolve_v2(ctx, v2_1=room_version.state_res is StateResolutionAlgorithm.V2_1)


class _Context:
    """Shared lookups and memos for one resolution."""

    def __init__(
        self,
        room_version: RoomVersion,
        state_sets: Sequence[StateMap],
        index: AuthChainIndex,
        api: _AuthApi,
    ) -> None:
        self.room_version = room_version
        self.state_sets = state_sets
        self.index = index
        self.api = api
        self._power: dict[str, PowerLevel] = {}
        self._pl_parent: dict[str, str | None] = {}
        creates = {s[_CREATE] for s in state_sets if _CREATE in s}
        self._state_create_id = next(iter(creates)) if len(creates) == 1 else None

    def event(self, event_id: str) -> Event:
        return self.index.event(event_id)

    def auth_events_by_key(self, event: Event, *, include_rejected: bool) -> dict[StateKey, Event]:
        """The event's auth events by (type, state_key); first one wins on duplicates."""
        out: dict[StateKey, Event] = {}
        self.index.require(event.auth_event_ids)
        for aid in event.auth_event_ids:
            auth_event = self.event(aid)
            if not auth_event.is_state() or (auth_event.rejected and not include_rejected):
                continue
            out.setdefault(auth_event.key, auth_event)
        return out

    def create_event_for(self, event: Event) -> Event | None:
        """The room's create event when neither state nor auth events supply it.

        Room version 12 derives it from the room ID; older versions use the create
        event the state sets agree on, if they do.
        """
        if self.room_version.room_id_is_create_event_id:
            room_id = event.pdu.get("room_id")
            if isinstance(room_id, str) and room_id.startswith("!"):
                return self.event("$" + room_id[1:])
        if self._state_create_id is not None:
            return self.event(self._state_create_id)
        return None

    def auth_state(self, event: Event, state: Mapping[StateKey, str]) -> dict[StateKey, Event]:
        """State to authorise ``event`` against during the iterative auth checks.

        Each needed key comes from ``state`` when present there, otherwise from
        the event's own auth events, skipping rejected ones.
        """
        keys = list(
            self.api.auth_types(
                self.room_version, event.type, event.sender, event.state_key, event.content
            )
        )
        if _CREATE not in keys:
            keys.append(_CREATE)
        from_auth: dict[StateKey, Event] | None = None
        out: dict[StateKey, Event] = {}
        for key in keys:
            state_id = state.get(key)
            if state_id is not None:
                out[key] = self.event(state_id)
                continue
            if from_auth is None:
                from_auth = self.auth_events_by_key(event, include_rejected=False)
            found = from_auth.get(key)
            if found is not None:
                out[key] = found
        if _CREATE not in out:
            create = self.create_event_for(event)
            if create is not None:
                out[_CREATE] = create
        return out

    def is_allowed(self, event: Event, state: Mapping[StateKey, str]) -> bool:
        if not event.is_state():
            return False
        auth_state = self.auth_state(event, state)
        if _CREATE not in auth_state:
            return False
        try:
            self.api.check(event, auth_state)
        except self.api.error:
            return False
        return True

    def iterative_auth_checks(
        self, event_ids: Iterable[str], base: Mapping[StateKey, str]
    ) -> dict[StateKey, str]:
        state = dict(base)
        for event_id in event_ids:
            event = self.event(event_id)
            if self.is_allowed(event, state):
                state[event.key] = event_id
        return state

    def sender_power(self, event_id: str) -> PowerLevel:
        """Sender's power level according to the event's own auth events."""
        power = self._power.get(event_id)
        if power is None:
            event = self.event(event_id)
            auth_state = self.auth_events_by_key(event, include_rejected=True)
            if _CREATE not in auth_state:
                create = self.create_event_for(event)
                if create is not None:
                    auth_state[_CREATE] = create
            power = self.api.power_level(event.sender, auth_state)
            self._power[event_id] = power
        return power

    def power_levels_parent(self, event_id: str) -> str | None:
        """The ``m.room.power_levels`` event among the event's auth events."""
        if event_id in self._pl_parent:
            return self._pl_parent[event_id]
        event = self.event(event_id)
        self.index.require(event.auth_event_ids)
        parent: str | None = None
        for aid in event.auth_event_ids:
            auth_event = self.event(aid)
            if auth_event.is_state() and auth_event.key == _POWER_LEVELS:
                parent = aid
                break
        self._pl_parent[event_id] = parent
        return parent


# ---------------------------------------------------------------------------
# Algorithm v2 / v2.1


def _split_conflicts(
    state_sets: Sequence[StateMap], *, missing_key_conflicts: bool
) -> tuple[dict[StateKey, str], dict[StateKey, set[str]]]:
    """Split into the unconflicted map and the conflicting values per key.

    With ``missing_key_conflicts`` (v2), a key absent from some state set is
    conflicted; otherwise (v1) only differing values conflict.
    """
    values: dict[StateKey, set[str]] = {}
    present: dict[StateKey, int] = {}
    for state in state_sets:
        for key, event_id in state.items():
            values.setdefault(key, set()).add(event_id)
            present[key] = present.get(key, 0) + 1
    unconflicted: dict[StateKey, str] = {}
    conflicted: dict[StateKey, set[str]] = {}
    total = len(state_sets)
    for key, ids in values.items():
        complete = present[key] == total or not missing_key_conflicts
        if len(ids) == 1 and complete:
            unconflicted[key] = next(iter(ids))
        else:
            conflicted[key] = ids
    return unconflicted, conflicted


def _resolve_v2(ctx: _Context, *, v2_1: bool) -> dict[StateKey, str]:
    index = ctx.index
    unconflicted, conflicted_by_key = _split_conflicts(ctx.state_sets, missing_key_conflicts=True)
    if not conflicted_by_key:
        return unconflicted
    conflicted: set[str] = set().union(*conflicted_by_key.values())
    index.require({e for s in ctx.state_sets for e in s.values()})

    full_conflicted = conflicted | index.auth_difference(ctx.state_sets)
    if v2_1:
        full_conflicted |= index.conflicted_subgraph(conflicted)
    # Only state events can be applied to a state map.
    full_conflicted = {e for e in full_conflicted if ctx.event(e).is_state()}

    # Step 1: power events plus their auth chains within the full conflicted set.
    edges = index.condensed_edges(full_conflicted)
    power_events = {e for e in full_conflicted if is_power_event(ctx.event(e))}
    selected: set[str] = set()
    stack = list(power_events)
    while stack:
        event_id = stack.pop()
        if event_id in selected:
            continue
        selected.add(event_id)
        stack.extend(edges[event_id] - selected)
    power_sorted = _reverse_topological_power_sort(ctx, selected, edges)

    # Step 2: iterative auth checks from the unconflicted map (v2) or empty (v2.1).
    partial = ctx.iterative_auth_checks(power_sorted, {} if v2_1 else unconflicted)

    # Steps 3 and 4: everything else, in mainline order of the resolved power levels.
    others = _mainline_sort(ctx, full_conflicted - selected, partial.get(_POWER_LEVELS))
    resolved = ctx.iterative_auth_checks(others, partial)

    # Step 5: the unconflicted map wins.
    resolved.update(unconflicted)
    return resolved


def _reverse_topological_power_sort(
    ctx: _Context, event_ids: set[str], edges: Mapping[str, frozenset[str]]
) -> list[str]:
    """Kahn's algorithm over the auth DAG, earliest first; ties go to the event
    with the most powerful sender, then the smallest origin_server_ts, then the
    smallest event ID."""

    def rank(event_id: str) -> tuple[PowerLevel, int, str]:
        return (-ctx.sender_power(event_id), ctx.event(event_id).origin_server_ts, event_id)

    pending: dict[str, int] = {}
    dependants: dict[str, list[str]] = {e: [] for e in event_ids}
    for event_id in event_ids:
        deps = edges[event_id] & event_ids
        pending[event_id] = len(deps)
        for dep in deps:
            dependants[dep].append(event_id)

    heap = [(rank(e), e) for e, n in pending.items() if n == 0]
    heapq.heapify(heap)
    out: list[str] = []
    emitted: set[str] = set()
    while len(out) < len(event_ids):
        if not heap:
            # Only reachable with a cyclic (malformed) auth graph: break the
            # cycle deterministically at its smallest event.
            stuck = min((rank(e), e) for e in event_ids if e not in emitted)
            pending[stuck[1]] = 0
            heap.append(stuck)
        _, event_id = heapq.heappop(heap)
        if event_id in emitted:
            continue
        emitted.add(event_id)
        out.append(event_id)
        for dependant in dependants[event_id]:
            pending[dependant] -= 1
            if pending[dependant] == 0:
                heapq.heappush(heap, (rank(dependant), dependant))
    return out


def _mainline_sort(ctx: _Context, event_ids: set[str], power_levels_id: str | None) -> list[str]:
    """Order by mainline position (earlier in the mainline first), then
    origin_server_ts, then event ID."""
    mainline: dict[str, int] = {}
    current = power_levels_id
    while current is not None and current not in mainline:
        mainline[current] = len(mainline)
        current = ctx.power_levels_parent(current)

    # Position of a power levels event reached from an event being sorted:
    # its own mainline index, or that of the nearest mainline ancestor.
    memo: dict[str, float] = {}

    def position_of_pl(start: str) -> float:
        walk: list[str] = []
        seen: set[str] = set()
        current: str | None = start
        result = math.inf
        while current is not None:
            if current in mainline:
                result = mainline[current]
                break
            if current in memo:
                result = memo[current]
                break
            if current in seen:  # malformed cycle
                break
            seen.add(current)
            walk.append(current)
            current = ctx.power_levels_parent(current)
        for pl in walk:
            memo[pl] = result
        return result

    def sort_key(event_id: str) -> tuple[float, int, str]:
        parent = ctx.power_levels_parent(event_id)
        position = math.inf if parent is None else position_of_pl(parent)
        return (-position, ctx.event(event_id).origin_server_ts, event_id)

    return sorted(event_ids, key=sort_key)


# ---------------------------------------------------------------------------
# Algorithm v1 (room version 1)


def _sha1(event_id: str) -> str:
    return hashlib.sha1(event_id.encode("utf-8")).hexdigest()


def _resolve_v1(ctx: _Context) -> dict[StateKey, str]:
    resolved, conflicted = _split_conflicts(ctx.state_sets, missing_key_conflicts=False)
    if not conflicted:
        return resolved
    ctx.index.require({e for ids in conflicted.values() for e in ids})

    member_keys = sorted(k for k in conflicted if k[0] == _MEMBER)
    auth_keys = [k for k in (_POWER_LEVELS, _JOIN_RULES) if k in conflicted] + member_keys

    # Power levels, then join rules, then each membership: starting from the
    # lowest depth (ties: highest sha1 of the ID), take events while they pass
    # auth against the state resolved so far.
    for key in auth_keys:
        events = [ctx.event(e) for e in conflicted[key]]
        events.sort(key=lambda ev: _sha1(ev.event_id), reverse=True)
        events.sort(key=lambda ev: ev.depth)
        resolved[key] = events[0].event_id
        for event in events[1:]:
            if not ctx.is_allowed(event, resolved):
                break
            resolved[key] = event.event_id

    # Everything else: the highest depth (ties: lowest sha1) that passes auth.
    # If none does, the last candidate (lowest depth) is kept so that the key is
    # never dropped.
    handled = set(auth_keys)
    for key in sorted(k for k in conflicted if k not in handled):
        events = sorted(
            (ctx.event(e) for e in conflicted[key]), key=lambda ev: (-ev.depth, _sha1(ev.event_id))
        )
        chosen = next((ev for ev in events if ctx.is_allowed(ev, resolved)), events[-1])
        resolved[key] = chosen.event_id
    return resolved
