"""Stream tokens (pure): positions of every stream a client has seen, as one short string.

Format: "s" followed by the positions joined with "_", in the order of STREAM_ORDER:
e.g. "s1234_0_5". Streams added later append fields; a token with fewer fields than the
code knows reads the missing ones as 0 (the stream's beginning), so old tokens stay valid.
Trailing zero fields are left out when encoding ("s1234" rather than "s1234_0_0_0_0_0_0"),
which keeps tokens short and is the same token by that rule.
The same codec serves /sync's `since`/`next_batch` and /messages' `from`/`end` (which
read only the events position).
"""

from __future__ import annotations

import re

import attrs

STREAM_ORDER = (
    "events",
    "typing",
    "receipts",
    "presence",
    "account_data",
    "to_device",
    "device_lists",
)
# Stream positions are PostgreSQL BIGINTs (and SQLite INTEGERs).
MAX_POSITION = 2**63 - 1
# ASCII digits only, and the whole string: `\d` would admit other scripts' digits and
# `$` a trailing newline.
_TOKEN = re.compile(r"s([0-9]{1,19}(?:_[0-9]{1,19})*)")


class TokenError(ValueError):
    pass


@attrs.frozen(slots=True)
class StreamToken:
    events: int = 0
    typing: int = 0
    receipts: int = 0
    presence: int = 0
    account_data: int = 0
    to_device: int = 0
    device_lists: int = 0

    def encode(self) -> str:
        values = [getattr(self, name) for name in STREAM_ORDER]
        while len(values) > 1 and values[-1] == 0:
            values.pop()
        return "s" + "_".join(str(v) for v in values)

    def get(self, stream: str) -> int:
        """The position of `stream` (0 for a stream this code does not know)."""
        return int(getattr(self, stream, 0)) if stream in STREAM_ORDER else 0

    def positions(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in STREAM_ORDER}

    def with_positions(self, **positions: int) -> StreamToken:
        return attrs.evolve(self, **positions)

    def __str__(self) -> str:
        return self.encode()

    @classmethod
    def decode(cls, raw: str) -> StreamToken:
        m = _TOKEN.fullmatch(raw)
        if not m:
            raise TokenError(f"malformed token {raw[:64]!r}")
        parts = [int(p) for p in m.group(1).split("_")]
        if any(p > MAX_POSITION for p in parts):
            # 19 digits can exceed a BIGINT: the database would fail on it (a 500).
            raise TokenError(f"position out of range in token {raw[:64]!r}")
        if len(parts) > len(STREAM_ORDER):
            raise TokenError("token has more fields than this server knows")
        values = dict(zip(STREAM_ORDER, parts, strict=False))
        return cls(**values)

    def is_after(self, other: StreamToken) -> bool:
        """True when any stream of self is beyond other's."""
        return any(getattr(self, n) > getattr(other, n) for n in STREAM_ORDER)
