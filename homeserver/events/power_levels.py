"""Reading power-level values as each room version understands them.

Room versions 1–9 accept integer-valued power-level properties written as strings
("stringy" power levels), and versions 1–5 additionally accept floats, which are
truncated towards zero ("floaty" power levels, only possible while canonical JSON is
not enforced). From version 10 only genuine JSON integers are valid.

Everything here is pure: it inspects JSON values and never touches storage.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any, Final

from homeserver.events.room_versions import RoomVersion

# The integer-valued top-level properties of m.room.power_levels content and their
# defaults when unspecified.
LEVEL_DEFAULTS: Final[Mapping[str, int]] = {
    "users_default": 0,
    "events_default": 0,
    "state_default": 50,
    "ban": 50,
    "kick": 50,
    "redact": 50,
    "invite": 0,
}
TOP_LEVEL_KEYS: Final[tuple[str, ...]] = tuple(LEVEL_DEFAULTS)

# A stringy integer: optional surrounding whitespace, an optional single sign, then
# base-10 ASCII digits (leading zeroes allowed). Decimal points or exponents are not
# integers. Whitespace is taken to be ASCII whitespace.
_STRINGY_INT = re.compile(r"[ \t\n\r\f\v]*([+-]?[0-9]+)[ \t\n\r\f\v]*", re.ASCII)


def accepts_string_levels(room_version: RoomVersion) -> bool:
    return not room_version.integer_power_levels


def accepts_float_levels(room_version: RoomVersion) -> bool:
    # Floats can only occur in versions without canonical-JSON enforcement.
    return not room_version.integer_power_levels and not room_version.strict_canonicaljson


def parse_level(value: Any, room_version: RoomVersion) -> int | None:
    """The integer a power-level value denotes in ``room_version``, or None if invalid."""
    if isinstance(value, bool):  # JSON true/false are not integers
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and accepts_string_levels(room_version):
        m = _STRINGY_INT.fullmatch(value)
        return int(m.group(1)) if m else None
    if isinstance(value, float) and accepts_float_levels(room_version):
        if not math.isfinite(value):
            return None
        return math.trunc(value)
    return None


def is_non_finite_float(value: Any) -> bool:
    return isinstance(value, float) and not math.isfinite(value)


def level_map(raw: Any, room_version: RoomVersion) -> dict[str, int]:
    """The valid entries of an ``events``/``notifications``/``users`` object."""
    if not isinstance(raw, Mapping):
        return {}
    out: dict[str, int] = {}
    for key, value in raw.items():
        level = parse_level(value, room_version)
        if isinstance(key, str) and level is not None:
            out[key] = level
    return out


def top_level_levels(content: Mapping[str, Any], room_version: RoomVersion) -> dict[str, int]:
    """The valid top-level integer properties present in power-levels content."""
    out: dict[str, int] = {}
    for key in TOP_LEVEL_KEYS:
        if key in content:
            level = parse_level(content[key], room_version)
            if level is not None:
                out[key] = level
    return out


def level_or_default(
    content: Mapping[str, Any], key: str, default: int, room_version: RoomVersion
) -> int:
    """``content[key]`` as a level; ``default`` when absent or (in old versions) unparsable."""
    level = parse_level(content.get(key), room_version) if key in content else None
    return default if level is None else level
