"""Which client API requests a guest account may make (client-server API, "Guest Access").

Guests get only a subset of the API. The subset is this one allow-list, checked centrally
by `Authenticator.get_requester` for every authenticated request a guest makes, against
the request's method and path; everything else answers 403 M_GUEST_ACCESS_FORBIDDEN. An
endpoint added later is therefore forbidden to guests until it is listed here.

Endpoints that do not authenticate (versions, login, GET /publicRooms, ...) are open to
anyone, guests included, and never reach the check.
"""

from __future__ import annotations

import re

import attrs

# Every version prefix the router serves the client API under (see Router.add_client),
# and the v1-only prefix of newer endpoints.
_V3 = r"/_matrix/client/(?:r0|v3|unstable)"
_V1 = r"/_matrix/client/(?:v1|unstable)"
_SEGMENT = r"[^/]+"
_ROOM = _V3 + r"/rooms/" + _SEGMENT


@attrs.frozen(slots=True)
class GuestRule:
    """One allowed (method, path) shape; `why` says where the permission comes from."""

    methods: frozenset[str]
    path: re.Pattern[str]
    why: str

    def allows(self, method: str, path: str) -> bool:
        return method in self.methods and self.path.fullmatch(path) is not None


def _rule(methods: str, pattern: str, why: str) -> GuestRule:
    return GuestRule(frozenset(methods.split()), re.compile(pattern), why)


SPEC = "the spec's list"
# Beyond the spec's list: what a client needs to use the listed endpoints at all, or that
# only concerns the guest's own session or rooms the guest may already be in.
EXTENSION = "extension"

GUEST_RULES: tuple[GuestRule, ...] = (
    # Retrieving events.
    _rule("GET", _ROOM + r"/state", SPEC),
    _rule("GET", _ROOM + r"/state/[^/]+(?:/[^/]*)?", SPEC),
    _rule("GET", _ROOM + r"/context/" + _SEGMENT, SPEC),
    _rule("GET", _ROOM + r"/event/" + _SEGMENT, SPEC),
    _rule("GET", _ROOM + r"/messages", SPEC),
    _rule("GET", _ROOM + r"/members", SPEC),
    _rule("GET", _ROOM + r"/initialSync", SPEC),
    _rule("GET", _V3 + r"/sync", SPEC),
    _rule("GET", _V3 + r"/events", SPEC),
    _rule("GET", _V1 + r"/media/download/[^/]+/[^/]+(?:/[^/]+)?", SPEC),
    _rule("GET", _V1 + r"/media/thumbnail/[^/]+/[^/]+", SPEC),
    # Sending events. Membership and the room's guest_access are checked by the handlers.
    _rule("POST", _ROOM + r"/join", SPEC),
    _rule("POST", _ROOM + r"/leave", SPEC),
    _rule("PUT", _ROOM + r"/send/[^/]+/[^/]+", SPEC),
    _rule("PUT", _ROOM + r"/state/[^/]+(?:/[^/]*)?", SPEC),
    _rule("PUT", _V3 + r"/sendToDevice/[^/]+/[^/]+", SPEC),
    # Account maintenance: of the profile, only the display name.
    _rule("PUT DELETE", _V3 + r"/profile/[^/]+/displayname", SPEC),
    _rule("GET", _V3 + r"/devices", SPEC),
    _rule("GET PUT", _V3 + r"/devices/" + _SEGMENT, SPEC),
    _rule("GET", _V3 + r"/account/whoami", SPEC),
    # End-to-end encryption.
    _rule("POST", _V3 + r"/keys/(?:upload|query|claim)", SPEC),
    # The same join as /rooms/{roomId}/join, by ID or alias.
    _rule("POST", _V3 + r"/join/" + _SEGMENT, EXTENSION),
    # /sync takes filters by ID.
    _rule("POST", _V3 + r"/user/[^/]+/filter", EXTENSION),
    _rule("GET", _V3 + r"/user/[^/]+/filter/[^/]+", EXTENSION),
    # Taking part in a room the guest has joined.
    _rule("PUT", _ROOM + r"/typing/" + _SEGMENT, EXTENSION),
    _rule("POST", _ROOM + r"/receipt/[^/]+/[^/]+", EXTENSION),
    _rule("POST", _ROOM + r"/read_markers", EXTENSION),
    # Ending the guest's own session.
    _rule("POST", _V3 + r"/logout", EXTENSION),
)


def guest_may_request(method: str, path: str, rules: tuple[GuestRule, ...] = GUEST_RULES) -> bool:
    """Whether a guest may make this request. `path` is the percent-encoded request path."""
    if method == "HEAD":
        method = "GET"
    return any(rule.allows(method, path) for rule in rules)
