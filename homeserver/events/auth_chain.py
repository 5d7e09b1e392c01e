"""Auth chains over an in-memory map of events (pure code, no I/O).

The *auth chain* of an event is everything reachable from it by following
``auth_events`` links (the event itself excluded). Rooms can have tens of
thousands of state events, so every walk here is iterative (no recursion), runs
over a compact integer graph, and the per-event edge lists and recent chain
results are memoized on the :class:`AuthChainIndex`.

Events that are referenced but absent from the event map are collected during a
walk and reported all at once through :class:`MissingEventsError`, so that an I/O
layer can fetch them and retry.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Collection, Iterable, Mapping, Sequence

from homeserver.events.event import Event, StateKey

__all__ = ["AuthChainIndex", "MissingEventsError"]


class MissingEventsError(Exception):
    """Events needed for a computation are not in the event map.

    ``event_ids`` holds every missing ID found by the walk that failed. Fetching
    them may reveal further missing ancestors, so callers should retry until the
    computation succeeds.
    """

    def __init__(self, event_ids: Iterable[str]) -> None:
        self.event_ids: frozenset[str] = frozenset(event_ids)
        shown = sorted(self.event_ids)
        text = ", ".join(shown[:10]) + (", …" if len(shown) > 10 else "")
        super().__init__(f"{len(shown)} event(s) missing from the event map: {text}")


_CACHE_SIZE = 32


class AuthChainIndex:
    """Auth-chain queries over ``event_map``, with memoized graph structure.

    Event IDs are interned to integers on first sight and each present event's
    (deduplicated) auth edges are stored once, so repeated queries on the same
    index only pay for the traversal itself. Results of :meth:`auth_chain` are
    kept in a small LRU cache keyed by the query.

    The index assumes that events already present in ``event_map`` never change;
    adding events that were missing is fine (missing events are not cached).
    """

    def __init__(self, event_map: Mapping[str, Event]) -> None:
        self._event_map = event_map
        self._index: dict[str, int] = {}
        self._ids: list[str] = []
        # Auth edges per interned event; None until loaded (or while missing).
        self._parents: list[tuple[int, ...] | None] = []
        self._chain_cache: OrderedDict[frozenset[str], frozenset[int]] = OrderedDict()

    # ------------------------------------------------------------------ basics

    @property
    def event_map(self) -> Mapping[str, Event]:
        return self._event_map

    def event(self, event_id: str) -> Event:
        """The event with this ID, or :class:`MissingEventsError`."""
        ev = self._event_map.get(event_id)
        if ev is None:
            raise MissingEventsError([event_id])
        return ev

    def require(self, event_ids: Iterable[str]) -> None:
        """Raise :class:`MissingEventsError` naming every ID not in the map."""
        missing = {e for e in event_ids if e not in self._event_map}
        if missing:
            raise MissingEventsError(missing)

    def _intern(self, event_id: str) -> int:
        idx = self._index.get(event_id)
        if idx is None:
            idx = len(self._ids)
            self._index[event_id] = idx
            self._ids.append(event_id)
            self._parents.append(None)
        return idx

    def _edges(self, idx: int, missing: set[str]) -> tuple[int, ...]:
        """Auth edges of an interned event; records it in ``missing`` if absent."""
        parents = self._parents[idx]
        if parents is not None:
            return parents
        event_id = self._ids[idx]
        ev = self._event_map.get(event_id)
        if ev is None:
            missing.add(event_id)
            return ()
        seen: dict[int, None] = {}
        for aid in ev.auth_event_ids:
            seen.setdefault(self._intern(aid), None)
        parents = tuple(seen)
        self._parents[idx] = parents
        return parents

    # --------------------------------------------------------------- traversal

    def _closure(self, event_ids: Iterable[str]) -> frozenset[int]:
        """Interned auth chain (union over the given events, themselves excluded
        unless reachable from another)."""
        missing: set[str] = set()
        seen: set[int] = set()
        stack: list[int] = []
        for event_id in event_ids:
            idx = self._intern(event_id)
            if event_id not in self._event_map:
                missing.add(event_id)
                continue
            stack.extend(self._edges(idx, missing))
        while stack:
            idx = stack.pop()
            if idx in seen:
                continue
            seen.add(idx)
            for parent in self._edges(idx, missing):
                if parent not in seen:
                    stack.append(parent)
        if missing:
            raise MissingEventsError(missing)
        return frozenset(seen)

    def _cached_closure(self, event_ids: Iterable[str]) -> frozenset[int]:
        key = frozenset(event_ids)
        hit = self._chain_cache.get(key)
        if hit is not None:
            self._chain_cache.move_to_end(key)
            return hit
        result = self._closure(key)
        self._chain_cache[key] = result
        if len(self._chain_cache) > _CACHE_SIZE:
            self._chain_cache.popitem(last=False)
        return result

    def _postorder(self, roots: Iterable[str]) -> list[int]:
        """The roots and all their ancestors, every event after its auth events.

        Iterative depth-first search. A (malformed) cycle is cut where the walk
        finds it, so this always terminates.
        """
        missing: set[str] = set()
        order: list[int] = []
        done: set[int] = set()
        on_stack: set[int] = set()
        for root in sorted(roots):
            ridx = self._intern(root)
            if ridx in done:
                continue
            stack: list[tuple[int, int]] = [(ridx, 0)]
            on_stack.add(ridx)
            while stack:
                idx, pos = stack[-1]
                parents = self._edges(idx, missing)
                if pos < len(parents):
                    stack[-1] = (idx, pos + 1)
                    parent = parents[pos]
                    if parent not in done and parent not in on_stack:
                        on_stack.add(parent)
                        stack.append((parent, 0))
                    continue
                stack.pop()
                on_stack.discard(idx)
                done.add(idx)
                order.append(idx)
        if missing:
            raise MissingEventsError(missing)
        return order

    # ------------------------------------------------------------- public API

    def auth_chain(self, event_ids: Iterable[str]) -> set[str]:
        """Union of the auth chains of ``event_ids``.

        The given events are not included unless one is in another's chain.
        """
        ids = self._ids
        return {ids[i] for i in self._cached_closure(event_ids)}

    def auth_difference(
        self, state_sets: Sequence[Mapping[StateKey, str] | Collection[str]]
    ) -> set[str]:
        """Union minus intersection of the full auth chains of the state sets.

        Each state set is a state map (its values are used) or a collection of
        event IDs. A state set's *full* auth chain is taken to be its own events
        together with their auth chains: an event that a state set holds counts
        as reached by that set. This only matters for an event held by every set
        but cited by some only: it is then not part of the difference. (The other
        reading, events themselves excluded, would put such unconflicted events
        into the full conflicted set; other homeservers count a state set's own
        events, and resolution must agree across servers.)
        """
        if not state_sets:
            return set()
        chains: list[frozenset[int]] = []
        for state_set in state_sets:
            ids = frozenset(state_set.values() if isinstance(state_set, Mapping) else state_set)
            own = frozenset(self._intern(e) for e in ids)
            chains.append(self._cached_closure(ids) | own)
        union = frozenset().union(*chains)
        common = chains[0].intersection(*chains[1:])
        ids_of = self._ids
        return {ids_of[i] for i in union - common}

    def condensed_edges(self, targets: Collection[str]) -> dict[str, frozenset[str]]:
        """Auth-graph edges between ``targets``, with non-targets contracted away.

        For each target *t*, the targets reachable from *t* by an auth path whose
        intermediate events are not targets. The transitive closure of these edges
        is exactly "is in the auth chain of" restricted to the targets, so they
        carry the same ordering constraints with far fewer edges.
        """
        target_idx = sorted({self._intern(t) for t in targets})
        bit = {idx: i for i, idx in enumerate(target_idx)}
        order = self._postorder(targets)
        near: dict[int, int] = {}
        parents_of = self._parents
        for idx in order:
            mask = 0
            for parent in parents_of[idx] or ():
                b = bit.get(parent)
                if b is not None:
                    mask |= 1 << b
                else:
                    mask |= near.get(parent, 0)
            near[idx] = mask
        ids = self._ids
        out: dict[str, frozenset[str]] = {}
        for idx in target_idx:
            mask = near[idx]
            members: list[str] = []
            while mask:
                low = mask & -mask
                members.append(ids[target_idx[low.bit_length() - 1]])
                mask ^= low
            out[ids[idx]] = frozenset(members)
        return out

    def conflicted_subgraph(self, conflicted: Collection[str]) -> set[str]:
        """Events on some auth path between two events of ``conflicted``.

        Endpoints included: the union of all such paths, plus ``conflicted``.
        """
        members = {self._intern(c) for c in conflicted}
        order = self._postorder(conflicted)
        reaches: dict[int, bool] = {}
        parents_of = self._parents
        for idx in order:
            reaches[idx] = any(p in members or reaches.get(p, False) for p in parents_of[idx] or ())
        ids = self._ids
        return {ids[i] for i in order if i in members or reaches[i]}
