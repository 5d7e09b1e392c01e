"""Which membership events a device has already been sent, for lazy-loading (pure).

Remembered per (user, device) under the `next_batch` of the response that carried them,
so a member is treated as redundant only when the client proves, by syncing from that
token, that it received the response. A token we hold nothing for (another process, a
restart, an evicted entry) just means redundant members are sent again, which the spec
allows.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping

# room_id -> member user_id -> member event_id
KnownMembers = Mapping[str, Mapping[str, str]]

DEFAULT_MAX_DEVICES = 10_000
# Tokens remembered per device: the client may retry an older one after a lost response.
DEFAULT_TOKENS_PER_DEVICE = 3
# Members remembered per device; beyond this we forget (and resend) rather than grow.
DEFAULT_MAX_MEMBERS_PER_DEVICE = 50_000


class LazyMemberCache:
    def __init__(
        self,
        max_devices: int = DEFAULT_MAX_DEVICES,
        tokens_per_device: int = DEFAULT_TOKENS_PER_DEVICE,
        max_members_per_device: int = DEFAULT_MAX_MEMBERS_PER_DEVICE,
    ) -> None:
        self.max_devices = max_devices
        self.tokens_per_device = tokens_per_device
        self.max_members_per_device = max_members_per_device
        self._by_device: OrderedDict[
            tuple[str, str], OrderedDict[str, dict[str, dict[str, str]]]
        ] = OrderedDict()

    def known(self, user_id: str, device_id: str, since_token: str | None) -> KnownMembers:
        if since_token is None:
            return {}
        tokens = self._by_device.get((user_id, device_id))
        if tokens is None:
            return {}
        self._by_device.move_to_end((user_id, device_id))
        return tokens.get(since_token, {})

    def remember(
        self,
        user_id: str,
        device_id: str,
        next_token: str,
        base: KnownMembers,
        sent: Mapping[str, Mapping[str, str]],
        reset_room_ids: Iterable[str] = (),
    ) -> None:
        """Records that the response with `next_token` carried `sent` on top of `base`
        (what the client had); rooms in `reset_room_ids` start from nothing."""
        reset = set(reset_room_ids)
        merged: dict[str, dict[str, str]] = {
            room_id: dict(members) for room_id, members in base.items() if room_id not in reset
        }
        for room_id, members in sent.items():
            merged.setdefault(room_id, {}).update(members)
        if sum(len(m) for m in merged.values()) > self.max_members_per_device:
            self._by_device.pop((user_id, device_id), None)
            return
        key = (user_id, device_id)
        tokens = self._by_device.get(key)
        if tokens is None:
            tokens = OrderedDict()
            self._by_device[key] = tokens
        self._by_device.move_to_end(key)
        tokens[next_token] = merged
        tokens.move_to_end(next_token)
        while len(tokens) > self.tokens_per_device:
            tokens.popitem(last=False)
        while len(self._by_device) > self.max_devices:
            self._by_device.popitem(last=False)
