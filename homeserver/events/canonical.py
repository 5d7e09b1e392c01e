"""Canonical JSON encoding (the byte form that is hashed and signed).

The encoding is the shortest UTF-8 JSON text with object keys sorted by Unicode
code point. In strict mode (room versions 6 and later, and everything a client
sends) the only numbers allowed are integers in the interoperable range
``[-(2**53)+1, 2**53-1]``; anything else raises :class:`InvalidEventError`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "CANONICAL_INT_MAX",
    "CANONICAL_INT_MIN",
    "InvalidEventError",
    "check_canonical_json",
    "encode_canonical_json",
]

CANONICAL_INT_MAX = 2**53 - 1
CANONICAL_INT_MIN = -(2**53) + 1


class InvalidEventError(ValueError):
    """An event (or other signed JSON) is malformed. The message gives the reason."""


def _child(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _where(path: str) -> str:
    return path or "<root>"


def _normalise(value: Any, path: str, strict: bool) -> Any:
    """Return a copy of ``value`` made only of dict/list/str/int/bool/None.

    Validates along the way: object keys must be strings, strings must be encodable
    as UTF-8, and (when strict) numbers must be in-range integers.
    """
    if value is None or isinstance(value, bool | str):
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as e:
                raise InvalidEventError(
                    f"string at {_where(path)} is not valid Unicode (lone surrogate)"
                ) from e
        return value
    if isinstance(value, int):
        if strict and not CANONICAL_INT_MIN <= value <= CANONICAL_INT_MAX:
            raise InvalidEventError(
                f"integer at {_where(path)} is outside the canonical JSON range"
            )
        return int(value)
    if isinstance(value, float):
        if strict:
            raise InvalidEventError(f"float at {_where(path)} is not allowed in canonical JSON")
        if not math.isfinite(value):
            raise InvalidEventError(f"non-finite number at {_where(path)}")
        # Lenient mode (room versions 1–5): a float holding a whole number is written
        # as an integer, as canonical JSON has no exponents or fractions.
        if value.is_integer():
            return int(value)
        return value
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise InvalidEventError(f"non-string object key {k!r} at {_where(path)}")
            try:
                k.encode("utf-8")
            except UnicodeEncodeError as e:
                raise InvalidEventError(
                    f"object key at {_where(path)} is not valid Unicode (lone surrogate)"
                ) from e
            out[k] = _normalise(v, _child(path, k), strict)
        return out
    if isinstance(value, Sequence) and not isinstance(value, bytes | bytearray):
        return [_normalise(v, _child(path, i), strict) for i, v in enumerate(value)]
    raise InvalidEventError(f"value of type {type(value).__name__} at {_where(path)} is not JSON")


def check_canonical_json(obj: Any, *, strict: bool = True) -> None:
    """Raise :class:`InvalidEventError` if ``obj`` cannot be encoded (see module doc)."""
    _normalise(obj, "", strict)


def encode_canonical_json(obj: Any, *, strict: bool = True) -> bytes:
    """Encode ``obj`` as canonical JSON bytes.

    With ``strict`` (room versions 6+ and all client input) floats and integers
    outside ``[-(2**53)+1, 2**53-1]`` are rejected with :class:`InvalidEventError`
    naming the offending path (e.g. ``content.info.size``). With ``strict=False``
    (events of room versions 1–5) out-of-range integers are encoded as they are and
    whole-number floats are encoded as integers.
    """
    normalised = _normalise(obj, "", strict)
    text = json.dumps(
        normalised,
        ensure_ascii=False,
        separators=(",", ":"),
        sort_keys=True,
        allow_nan=False,
    )
    return text.encode("utf-8")
