"""A user's membership history (pure): what /sync needs to sort rooms into sections."""

from __future__ import annotations

from collections.abc import Iterable

import attrs

# Memberships after which the user may still see the room's new events.
CURRENT_MEMBERSHIPS = ("join", "invite", "knock")
GONE_MEMBERSHIPS = ("leave", "ban")


@attrs.frozen(slots=True)
class MembershipChange:
    membership: str
    stream_ordering: int


class MembershipHistory:
    """Every membership event of one user, per room, oldest first."""

    def __init__(self, rows: Iterable[tuple[str, str, int]]) -> None:
        self.by_room: dict[str, list[MembershipChange]] = {}
        for room_id, membership, stream_ordering in rows:
            self.by_room.setdefault(room_id, []).append(
                MembershipChange(membership, stream_ordering)
            )
        for changes in self.by_room.values():
            changes.sort(key=lambda c: c.stream_ordering)

    def room_ids(self) -> list[str]:
        return list(self.by_room)

    def at(self, room_id: str, pos: int) -> str | None:
        """The membership as of position `pos` (None: no membership event yet)."""
        latest: str | None = None
        for change in self.by_room.get(room_id, ()):
            if change.stream_ordering > pos:
                break
            latest = change.membership
        return latest

    def last_change_at(self, room_id: str, pos: int) -> MembershipChange | None:
        latest: MembershipChange | None = None
        for change in self.by_room.get(room_id, ()):
            if change.stream_ordering > pos:
                break
            latest = change
        return latest

    def changes_between(self, room_id: str, after: int, up_to: int) -> list[MembershipChange]:
        return [c for c in self.by_room.get(room_id, ()) if after < c.stream_ordering <= up_to]

    def joined_between(self, room_id: str, after: int, up_to: int) -> bool:
        """Whether the user's membership was "join" at any point in (after, up_to]."""
        if self.at(room_id, after) == "join":
            return True
        return any(c.membership == "join" for c in self.changes_between(room_id, after, up_to))

    def rejoined_between(self, room_id: str, after: int, up_to: int) -> bool:
        """Whether the membership became "join" from something else within (after, up_to]
        (a join that only changes a profile is join -> join and does not count)."""
        previous = self.at(room_id, after)
        for change in self.changes_between(room_id, after, up_to):
            if change.membership == "join" and previous != "join":
                return True
            previous = change.membership
        return False

    def newly_joined(self, room_id: str, since: int, up_to: int) -> bool:
        """Joined at up_to, and not continuously joined since `since` (a leave and rejoin
        within the window counts: the client must start the room afresh)."""
        if self.at(room_id, up_to) != "join":
            return False
        return self.rejoined_between(room_id, since, up_to)

    def ever_joined(self, room_id: str, up_to: int) -> bool:
        return any(
            c.membership == "join" and c.stream_ordering <= up_to
            for c in self.by_room.get(room_id, ())
        )
