"""The replication wire format (sans-I/O): bytes in, messages out, and back.

One message kind for now, POSITION: "stream S has advanced to position P on writer W".
Messages are compact JSON objects on one Redis pub/sub channel:

    {"v":1,"op":"POSITION","stream":"events","writer":"main","pos":1234}

The rows themselves are not carried: every process reads them from the shared database
by position, so a lost message costs latency, never data (see docs/architecture.md).
"""

from __future__ import annotations

import json
import re

import attrs

WIRE_VERSION = 1
CHANNEL = "ganglion.replication"

# fullmatch, not `$`, which would also accept a trailing newline.
_NAME = re.compile(r"[a-z0-9_\-]{1,64}")
_MAX_MESSAGE = 1024


class WireError(ValueError):
    """A message that does not decode; receivers log and drop it."""


@attrs.frozen(slots=True)
class PositionMessage:
    stream: str
    writer: str
    position: int

    def __attrs_post_init__(self) -> None:
        if not _NAME.fullmatch(self.stream):
            raise WireError(f"bad stream name {self.stream!r}")
        if not _NAME.fullmatch(self.writer):
            raise WireError(f"bad writer name {self.writer!r}")
        if (
            not isinstance(self.position, int)
            or isinstance(self.position, bool)
            or self.position < 0
        ):
            raise WireError(f"bad position {self.position!r}")


def encode(msg: PositionMessage) -> bytes:
    return json.dumps(
        {
            "v": WIRE_VERSION,
            "op": "POSITION",
            "stream": msg.stream,
            "writer": msg.writer,
            "pos": msg.position,
        },
        separators=(",", ":"),
    ).encode("ascii")


def decode(data: bytes | str) -> PositionMessage:
    if isinstance(data, str):
        try:
            data = data.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates
            raise WireError("not UTF-8") from None
    if len(data) > _MAX_MESSAGE:
        raise WireError("message too long")
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError) as e:  # RecursionError: nesting deeper than the stack
        raise WireError(f"not JSON: {e}") from None
    if not isinstance(obj, dict):
        raise WireError("not an object")
    if obj.get("v") != WIRE_VERSION:
        raise WireError(f"unsupported wire version {obj.get('v')!r}")
    if obj.get("op") != "POSITION":
        raise WireError(f"unknown op {obj.get('op')!r}")
    stream, writer, pos = obj.get("stream"), obj.get("writer"), obj.get("pos")
    if not isinstance(stream, str) or not isinstance(writer, str) or not isinstance(pos, int):
        raise WireError("stream, writer and pos must be string, string, integer")
    return PositionMessage(stream, writer, pos)
