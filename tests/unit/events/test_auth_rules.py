"""Table-driven tests of the authorisation rules, for every room version.

Events are hand-written PDUs wrapped in ``Event`` with event IDs chosen here, so these
tests depend on nothing but ``room_versions``, ``event`` and ``auth``.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import canonicaljson
import nacl.signing
import pytest

from homeserver.events.auth import (
    AuthError,
    auth_types_for_event,
    check_auth_events,
    check_auth_rules,
    get_named_level,
    get_send_level,
    get_user_power_level,
    room_creators,
)
from homeserver.events.event import Event, StateKey
from homeserver.events.room_versions import KNOWN_ROOM_VERSIONS, RoomVersion

ALL = [str(n) for n in range(1, 13)]


def versions(lo: int = 1, hi: int = 12) -> list[str]:
    return [str(n) for n in range(lo, hi + 1)]


ALICE = "@alice:a.test"  # creator, admin
MOD = "@mod:a.test"  # power level 50
BOB = "@bob:b.test"  # ordinary remote user
CAROL = "@carol:a.test"  # ordinary local user


class Room:
    """A hand-built room: a create event plus whatever state the test adds."""

    def __init__(
        self,
        version: str,
        *,
        create_sender: str = ALICE,
        create_content: Mapping[str, Any] | None = None,
    ) -> None:
        self.rv: RoomVersion = KNOWN_ROOM_VERSIONS[version]
        self._n = 0
        content: dict[str, Any] = {"room_version": version}
        if not self.rv.implicit_room_creator:
            content["creator"] = create_sender
        if create_content is not None:
            content.update(create_content)
        if self.rv.room_id_is_create_event_id:
            self.create = self.make(
                "m.room.create", create_sender, content, state_key="", room_id=None
            )
            self.room_id = "!" + self.create.event_id[1:]
        else:
            self.room_id = "!room:" + create_sender.split(":", 1)[1]
            self.create = self.make("m.room.create", create_sender, content, state_key="")
        self.state: dict[StateKey, Event] = {("m.room.create", ""): self.create}

    # -- building events ------------------------------------------------------------

    def _event_id(self, sender: str) -> str:
        self._n += 1
        if self.rv.uses_event_id_hash:
            return f"$ev{self._n}_v{self.rv.identifier}"
        return f"${self._n}:{sender.split(':', 1)[1]}"

    def _refs(self, ids: Iterable[str]) -> list[Any]:
        if self.rv.uses_event_id_hash:
            return list(ids)
        return [[i, {"sha256": "aGFzaA"}] for i in ids]

    def make(
        self,
        type: str,
        sender: str,
        content: Mapping[str, Any] | None = None,
        *,
        state_key: str | None = None,
        prev: Iterable[str] | None = None,
        event_id: str | None = None,
        room_id: str | None | bool = True,
        **extra: Any,
    ) -> Event:
        pdu: dict[str, Any] = {
            "type": type,
            "sender": sender,
            "content": dict(content or {}),
            "prev_events": self._refs(
                prev if prev is not None else ([] if type == "m.room.create" else ["$prev"])
            ),
            "auth_events": [],
            "depth": self._n + 1,
            "origin_server_ts": 1_700_000_000_000 + self._n,
            "hashes": {"sha256": "aGFzaA"},
            "signatures": {},
        }
        if room_id is True:
            pdu["room_id"] = self.room_id
        elif isinstance(room_id, str):
            pdu["room_id"] = room_id
        if state_key is not None:
            pdu["state_key"] = state_key
        pdu.update(extra)
        return Event(pdu, self.rv, event_id or self._event_id(sender))

    def add(self, event: Event) -> Event:
        self.state[event.key] = event
        return event

    def member(
        self, user: str, membership: str, sender: str | None = None, **content: Any
    ) -> Event:
        return self.add(
            self.make(
                "m.room.member",
                sender or user,
                {"membership": membership, **content},
                state_key=user,
            )
        )

    def power_levels(self, content: Mapping[str, Any], sender: str = ALICE) -> Event:
        return self.add(self.make("m.room.power_levels", sender, content, state_key=""))

    def join_rules(self, rule: str, sender: str = ALICE) -> Event:
        return self.add(self.make("m.room.join_rules", sender, {"join_rule": rule}, state_key=""))

    # -- checking -------------------------------------------------------------------

    def check(self, event: Event, **kwargs: Any) -> None:
        check_auth_rules(event, self.state, **kwargs)

    def allows(self, event: Event, **kwargs: Any) -> bool:
        try:
            check_auth_rules(event, self.state, **kwargs)
        except AuthError:
            return False
        return True


def standard_room(version: str, join_rule: str = "public", /, **pl: Any) -> Room:
    """Alice created it (level 100 or, in v12, creator); MOD has level 50; both joined."""
    room = Room(version)
    room.member(ALICE, "join")
    users: dict[str, Any] = {MOD: 50}
    if not room.rv.creators_have_infinite_power:
        users[ALICE] = 100
    room.power_levels({"users": users, **pl})
    room.join_rules(join_rule)
    room.member(MOD, "join")
    return room


def expect(room: Room, event: Event, allowed: bool, **kwargs: Any) -> None:
    if allowed:
        room.check(event, **kwargs)
    else:
        with pytest.raises(AuthError):
            room.check(event, **kwargs)


# ======================================================================================
# AuthError
# ======================================================================================


def test_auth_error_carries_reason() -> None:
    err = AuthError("because")
    assert err.reason == "because"
    assert str(err) == "because"


# ======================================================================================
# Create event rules
# ======================================================================================


@pytest.mark.parametrize("version", ALL)
def test_valid_create_event_is_allowed(version: str) -> None:
    room = Room(version)
    check_auth_rules(room.create, {})


@pytest.mark.parametrize("version", ALL)
def test_create_with_prev_events_rejected(version: str) -> None:
    room = Room(version)
    pdu = dict(room.create.pdu, prev_events=room._refs(["$earlier"]))
    with pytest.raises(AuthError, match="prev_events"):
        check_auth_rules(Event(pdu, room.rv, room.create.event_id), {})


@pytest.mark.parametrize("version", versions(1, 11))
def test_create_room_id_domain_must_match_sender(version: str) -> None:
    room = Room(version)
    pdu = dict(room.create.pdu, room_id="!room:elsewhere.test")
    with pytest.raises(AuthError, match="domain"):
        check_auth_rules(Event(pdu, room.rv, room.create.event_id), {})


@pytest.mark.parametrize("version", ["12"])
def test_v12_create_must_not_have_room_id(version: str) -> None:
    room = Room(version)
    assert "room_id" not in room.create.pdu
    check_auth_rules(room.create, {})
    pdu = dict(room.create.pdu, room_id="!room:a.test")
    with pytest.raises(AuthError, match="room_id"):
        check_auth_rules(Event(pdu, room.rv, room.create.event_id), {})


@pytest.mark.parametrize("version", ALL)
@pytest.mark.parametrize(
    ("room_version", "ok"), [("1", True), ("12", True), ("99", False), (12, False)]
)
def test_create_room_version_must_be_known(version: str, room_version: Any, ok: bool) -> None:
    room = Room(version, create_content={"room_version": room_version})
    if ok:
        check_auth_rules(room.create, {})
    else:
        with pytest.raises(AuthError, match="room_version"):
            check_auth_rules(room.create, {})


@pytest.mark.parametrize("version", ALL)
def test_create_creator_required_until_v11(version: str) -> None:
    room = Room(version)
    content = {k: v for k, v in room.create.content.items() if k != "creator"}
    event = Event(dict(room.create.pdu, content=content), room.rv, room.create.event_id)
    if room.rv.implicit_room_creator:
        check_auth_rules(event, {})
    else:
        with pytest.raises(AuthError, match="creator"):
            check_auth_rules(event, {})


@pytest.mark.parametrize(
    ("additional", "ok_v12"),
    [
        ([CAROL, BOB], True),
        ([], True),
        (["not-a-user"], False),
        ([CAROL, 5], False),
        (CAROL, False),
        (["@nocolon"], False),
    ],
)
@pytest.mark.parametrize("version", ["11", "12"])
def test_additional_creators_validated_in_v12(version: str, additional: Any, ok_v12: bool) -> None:
    room = Room(version, create_content={"additional_creators": additional})
    ok = ok_v12 or version != "12"  # v11 does not know additional_creators
    if ok:
        check_auth_rules(room.create, {})
    else:
        with pytest.raises(AuthError, match="additional_creators"):
            check_auth_rules(room.create, {})


# ======================================================================================
# Create event presence, v12 room ID, m.federate
# ======================================================================================


@pytest.mark.parametrize("version", ALL)
def test_non_create_event_needs_create_in_auth_state(version: str) -> None:
    room = standard_room(version)
    msg = room.make("m.room.message", ALICE, {"body": "hi"})
    room.check(msg)
    del room.state[("m.room.create", "")]
    with pytest.raises(AuthError, match="create"):
        room.check(msg)


def test_v12_room_id_must_be_create_event_id() -> None:
    room = standard_room("12")
    room.check(room.make("m.room.message", ALICE, {}))
    with pytest.raises(AuthError, match="room_id"):
        room.check(room.make("m.room.message", ALICE, {}, room_id="!other"))


def test_v12_rejected_create_event_rejects_everything() -> None:
    room = standard_room("12")
    msg = room.make("m.room.message", ALICE, {})
    room.create.rejected = True
    with pytest.raises(AuthError, match="rejected"):
        room.check(msg)


@pytest.mark.parametrize("version", versions(1, 11))
def test_room_id_not_tied_to_create_event_before_v12(version: str) -> None:
    room = standard_room(version)
    room.create.rejected = True  # not consulted before v12
    room.check(room.make("m.room.message", ALICE, {}))


@pytest.mark.parametrize("version", ALL)
@pytest.mark.parametrize(
    ("federate", "sender", "ok"),
    [
        (False, BOB, False),
        (False, CAROL, True),
        (True, BOB, True),
        (None, BOB, True),
        ("false", BOB, True),  # only the boolean false disables federation
    ],
)
def test_m_federate(version: str, federate: Any, sender: str, ok: bool) -> None:
    extra = {} if federate is None else {"m.federate": federate}
    room = Room(version, create_content=extra)
    room.member(ALICE, "join")
    room.join_rules("public")
    expect(room, room.make("m.room.member", sender, {"membership": "join"}, state_key=sender), ok)


# ======================================================================================
# m.room.aliases special case (v1–5)
# ======================================================================================


@pytest.mark.parametrize("version", ALL)
def test_aliases_from_non_member_for_own_server(version: str) -> None:
    room = standard_room(version)
    event = room.make("m.room.aliases", BOB, {"aliases": ["#x:b.test"]}, state_key="b.test")
    # v1–5: allowed by the special case; later: BOB is not joined.
    expect(room, event, room.rv.special_case_aliases_auth)


@pytest.mark.parametrize("version", ALL)
def test_aliases_for_other_server(version: str) -> None:
    room = standard_room(version)
    event = room.make("m.room.aliases", ALICE, {"aliases": ["#x:b.test"]}, state_key="b.test")
    # v1–5: state_key must be the sender's server; later: an ordinary state event.
    expect(room, event, not room.rv.special_case_aliases_auth)


@pytest.mark.parametrize("version", versions(1, 5))
def test_aliases_without_state_key_rejected(version: str) -> None:
    room = standard_room(version)
    with pytest.raises(AuthError, match="state_key"):
        room.check(room.make("m.room.aliases", ALICE, {"aliases": []}))


# ======================================================================================
# m.room.member: structure and join
# ======================================================================================


@pytest.mark.parametrize("version", ALL)
def test_member_needs_state_key_and_membership(version: str) -> None:
    room = standard_room(version)
    room.check(room.make("m.room.member", CAROL, {"membership": "join"}, state_key=CAROL))
    with pytest.raises(AuthError):
        room.check(room.make("m.room.member", CAROL, {"membership": "join"}))
    with pytest.raises(AuthError):
        room.check(room.make("m.room.member", CAROL, {"displayname": "c"}, state_key=CAROL))


@pytest.mark.parametrize("version", ALL)
@pytest.mark.parametrize("membership", ["join", "invite", "leave", "ban", "knock"])
def test_member_without_state_key_rejected_for_every_membership(
    version: str, membership: str
) -> None:
    room = standard_room(version, "knock" if membership == "knock" else "public")
    with pytest.raises(AuthError, match="state_key"):
        room.check(room.make("m.room.member", CAROL, {"membership": membership}))


@pytest.mark.parametrize("version", ALL)
def test_unknown_membership_rejected(version: str) -> None:
    room = standard_room(version)
    with pytest.raises(AuthError, match="unknown membership"):
        room.check(room.make("m.room.member", CAROL, {"membership": "dance"}, state_key=CAROL))


@pytest.mark.parametrize("version", ALL)
def test_creator_first_join(version: str) -> None:
    """The join right after the create event by the creator; v1–10 read content.creator."""
    room = Room(version, create_content={} if version in ("11", "12") else {"creator": CAROL})
    creator = ALICE if room.rv.implicit_room_creator else CAROL
    not_creator = CAROL if room.rv.implicit_room_creator else ALICE
    first = room.make(
        "m.room.member",
        creator,
        {"membership": "join"},
        state_key=creator,
        prev=[room.create.event_id],
    )
    room.check(first)
    other = room.make(
        "m.room.member",
        not_creator,
        {"membership": "join"},
        state_key=not_creator,
        prev=[room.create.event_id],
    )
    with pytest.raises(AuthError):
        room.check(other)
    # Not directly after the create event: the usual rules apply (no join rule: invite).
    later = room.make(
        "m.room.member", creator, {"membership": "join"}, state_key=creator, prev=["$x"]
    )
    with pytest.raises(AuthError):
        room.check(later)


@pytest.mark.parametrize("version", ALL)
def test_join_on_behalf_of_other_rejected(version: str) -> None:
    room = standard_room(version)
    with pytest.raises(AuthError, match="behalf"):
        room.check(room.make("m.room.member", ALICE, {"membership": "join"}, state_key=CAROL))


@pytest.mark.parametrize("version", ALL)
def test_banned_user_cannot_join_public_room(version: str) -> None:
    room = standard_room(version)
    join = room.make("m.room.member", CAROL, {"membership": "join"}, state_key=CAROL)
    room.check(join)
    room.member(CAROL, "ban", sender=ALICE)
    with pytest.raises(AuthError, match="banned"):
        room.check(join)


@pytest.mark.parametrize("version", ALL)
@pytest.mark.parametrize(
    ("join_rule", "current", "min_version"),
    [
        ("public", None, 1),
        ("public", "leave", 1),
        ("invite", "invite", 1),
        ("invite", "join", 1),
        ("knock", "invite", 7),
        ("knock", "join", 7),
        ("restricted", "invite", 8),
        ("restricted", "join", 8),
        ("knock_restricted", "invite", 10),
        ("knock_restricted", "join", 10),
    ],
)
def test_join_allowed(version: str, join_rule: str, current: str | None, min_version: int) -> None:
    room = standard_room(version, join_rule)
    if current is not None:
        room.member(CAROL, current, sender=ALICE if current == "invite" else CAROL)
    join = room.make("m.room.member", CAROL, {"membership": "join"}, state_key=CAROL)
    expect(room, join, int(version) >= min_version)


@pytest.mark.parametrize("version", ALL)
@pytest.mark.parametrize(
    ("join_rule", "current"),
    [
        ("invite", None),
        ("invite", "leave"),
        ("invite", "knock"),
        ("knock", None),
        ("knock", "knock"),
        ("restricted", None),
        ("knock_restricted", None),
        ("private", None),
        ("bogus", None),
    ],
)
def test_join_rejected(version: str, join_rule: str, current: str | None) -> None:
    room = standard_room(version, join_rule)
    if current is not None:
        room.member(CAROL, current)
    with pytest.raises(AuthError):
        room.check(room.make("m.room.member", CAROL, {"membership": "join"}, state_key=CAROL))


@pytest.mark.parametrize("version", ALL)
def test_missing_join_rules_means_invite(version: str) -> None:
    room = standard_room(version)
    del room.state[("m.room.join_rules", "")]
    join = room.make("m.room.member", CAROL, {"membership": "join"}, state_key=CAROL)
    with pytest.raises(AuthError):
        room.check(join)
    room.member(CAROL, "invite", sender=ALICE)
    room.check(join)


def _restricted_join(room: Room, authoriser: Any) -> Event:
    return room.make(
        "m.room.member",
        CAROL,
        {"membership": "join", "join_authorised_via_users_server": authoriser},
        state_key=CAROL,
    )


@pytest.mark.parametrize("version", ALL)
@pytest.mark.parametrize("join_rule", ["restricted", "knock_restricted"])
def test_restricted_join_via_authoriser(version: str, join_rule: str) -> None:
    room = standard_room(version, join_rule)
    supported = (
        room.rv.restricted_join_rule
        if join_rule == "restricted"
        else room.rv.knock_restricted_join_rule
    )
    expect(room, _restricted_join(room, MOD), supported)


@pytest.mark.parametrize("version", versions(8))
def test_restricted_join_authoriser_conditions(version: str) -> None:
    room = standard_room(version, "restricted", invite=50)
    room.check(_restricted_join(room, MOD))
    # Authoriser lacks invite power.
    room.member(CAROL + "x", "join")
    with pytest.raises(AuthError, match="invite"):
        room.check(_restricted_join(room, CAROL + "x"))
    # Authoriser is not joined (has power but left).
    room.member(MOD, "leave")
    with pytest.raises(AuthError, match="joined"):
        room.check(_restricted_join(room, MOD))
    # No or malformed authoriser.
    with pytest.raises(AuthError):
        room.check(room.make("m.room.member", CAROL, {"membership": "join"}, state_key=CAROL))
    with pytest.raises(AuthError):
        room.check(_restricted_join(room, 42))


@pytest.mark.parametrize("version", ALL)
def test_join_authorised_via_users_server_signature(version: str) -> None:
    room = standard_room(version, "public")
    join = _restricted_join(room, MOD)  # MOD's server is a.test

    def only_b_test(event: Event, server: str) -> bool:
        return server == "b.test"

    def everyone(event: Event, server: str) -> bool:
        return True

    # CAROL is on a.test, so the sender check would also fail: use a b.test joiner.
    bob_join = room.make(
        "m.room.member",
        BOB,
        {"membership": "join", "join_authorised_via_users_server": MOD},
        state_key=BOB,
        event_id=None if room.rv.uses_event_id_hash else "$j:b.test",
    )
    room.check(join)  # no verifier: signature checks skipped
    room.check(bob_join, verify_signature=everyone)
    # v8+: needs a signature from a.test (MOD's server); earlier the key means nothing.
    expect(room, bob_join, not room.rv.restricted_join_rule, verify_signature=only_b_test)


@pytest.mark.parametrize("version", versions(8))
def test_join_authorised_via_non_user_rejected_with_verifier(version: str) -> None:
    room = standard_room(version, "public")
    event = room.make(
        "m.room.member",
        CAROL,
        {"membership": "join", "join_authorised_via_users_server": None},
        state_key=CAROL,
    )
    room.check(event)
    with pytest.raises(AuthError, match="join_authorised_via_users_server"):
        room.check(event, verify_signature=lambda e, s: True)


# ======================================================================================
# Sender signature (delegated to the callback)
# ======================================================================================


@pytest.mark.parametrize("version", ALL)
def test_sender_server_signature_required(version: str) -> None:
    room = standard_room(version)
    msg = room.make("m.room.message", ALICE, {}, event_id=None)
    signed_by: set[str] = {"a.test"}

    def verify(event: Event, server: str) -> bool:
        return server in signed_by

    room.check(msg, verify_signature=verify)
    signed_by.clear()
    with pytest.raises(AuthError, match="signed"):
        room.check(msg, verify_signature=verify)
    room.check(msg)  # skipped without a verifier


@pytest.mark.parametrize("version", ALL)
def test_event_id_server_signature_v1_v2(version: str) -> None:
    room = standard_room(version)
    msg = room.make(
        "m.room.message", ALICE, {}, event_id="$abc:b.test" if version in ("1", "2") else None
    )

    def verify(event: Event, server: str) -> bool:
        return server == "a.test"

    # v1–2: the event ID's server (b.test) must also have signed.
    expect(room, msg, room.rv.uses_event_id_hash, verify_signature=verify)


# ======================================================================================
# m.room.member: invite
# ======================================================================================


@pytest.mark.parametrize("version", ALL)
def test_invite(version: str) -> None:
    room = standard_room(version, "invite", invite=50)
    invite = room.make("m.room.member", MOD, {"membership": "invite"}, state_key=CAROL)
    room.check(invite)
    # Sender below the invite level.
    room.member(BOB, "join")
    with pytest.raises(AuthError, match="invite"):
        room.check(room.make("m.room.member", BOB, {"membership": "invite"}, state_key=CAROL))
    # Sender not joined.
    room.member(MOD, "leave")
    with pytest.raises(AuthError, match="joined"):
        room.check(invite)


@pytest.mark.parametrize("version", ALL)
@pytest.mark.parametrize(
    ("target_state", "ok"), [("join", False), ("ban", False), ("leave", True), ("invite", True)]
)
def test_invite_target_membership(version: str, target_state: str, ok: bool) -> None:
    room = standard_room(version, "invite")
    room.member(CAROL, target_state, sender=ALICE)
    expect(room, room.make("m.room.member", ALICE, {"membership": "invite"}, state_key=CAROL), ok)


class ThirdPartyInvite:
    """An identity-server key pair, an m.room.third_party_invite and a signed claim."""

    def __init__(
        self, room: Room, sender: str = ALICE, token: str = "tok", listed: bool = False
    ) -> None:
        self.key = nacl.signing.SigningKey(b"\x07" * 32)
        public = base64.b64encode(bytes(self.key.verify_key)).decode().rstrip("=")
        content: dict[str, Any] = {"display_name": "c...", "key_validity_url": "https://id.test/v"}
        if listed:
            content["public_key"] = base64.b64encode(b"\x01" * 32).decode().rstrip("=")
            content["public_keys"] = [{"public_key": "junk!"}, {"public_key": public}]
        else:
            content["public_key"] = public
        self.event = room.add(
            room.make("m.room.third_party_invite", sender, content, state_key=token)
        )

    def signed(
        self, mxid: str = CAROL, token: str = "tok", key: nacl.signing.SigningKey | None = None
    ) -> dict[str, Any]:
        body = {"mxid": mxid, "token": token, "sender": ALICE}
        sig = (key or self.key).sign(canonicaljson.encode_canonical_json(body)).signature
        return {
            **body,
            "signatures": {"id.test": {"ed25519:0": base64.b64encode(sig).decode().rstrip("=")}},
        }


def _tpi_invite(
    room: Room, third_party_invite: Any, sender: str = ALICE, target: str = CAROL
) -> Event:
    return room.make(
        "m.room.member",
        sender,
        {"membership": "invite", "third_party_invite": third_party_invite},
        state_key=target,
    )


@pytest.mark.parametrize("version", ALL)
@pytest.mark.parametrize("listed", [False, True])
def test_third_party_invite_valid(version: str, listed: bool) -> None:
    room = standard_room(version, "invite")
    tpi = ThirdPartyInvite(room, listed=listed)
    room.check(_tpi_invite(room, {"display_name": "c", "signed": tpi.signed()}))


@pytest.mark.parametrize("version", ALL)
def test_third_party_invite_does_not_need_joined_sender(version: str) -> None:
    room = standard_room(version, "invite")
    tpi = ThirdPartyInvite(room, sender=BOB)  # BOB has never joined
    room.check(_tpi_invite(room, {"signed": tpi.signed()}, sender=BOB))


@pytest.mark.parametrize("version", ALL)
@pytest.mark.parametrize(
    "case",
    [
        "banned",
        "no_signed",
        "not_object",
        "no_mxid",
        "no_token",
        "mxid_mismatch",
        "unknown_token",
        "other_sender",
        "bad_signature",
        "tampered",
        "no_signatures",
    ],
)
def test_third_party_invite_rejected(version: str, case: str) -> None:
    room = standard_room(version, "invite")
    tpi = ThirdPartyInvite(room)
    signed = tpi.signed()
    sender = ALICE
    claim: Any = {"signed": signed}
    if case == "banned":
        room.member(CAROL, "ban", sender=ALICE)
    elif case == "no_signed":
        claim = {"display_name": "c"}
    elif case == "not_object":
        claim = "yes"
    elif case == "no_mxid":
        del signed["mxid"]
    elif case == "no_token":
        del signed["token"]
    elif case == "mxid_mismatch":
        claim = {"signed": tpi.signed(mxid=BOB)}
    elif case == "unknown_token":
        claim = {"signed": tpi.signed(token="other")}
    elif case == "other_sender":
        sender = MOD
    elif case == "bad_signature":
        claim = {"signed": tpi.signed(key=nacl.signing.SigningKey(b"\x09" * 32))}
    elif case == "tampered":
        signed["extra"] = "field"
    elif case == "no_signatures":
        del signed["signatures"]
    with pytest.raises(AuthError):
        room.check(_tpi_invite(room, claim, sender=sender))


# ======================================================================================
# m.room.member: leave, kick, unban
# ======================================================================================


@pytest.mark.parametrize("version", ALL)
@pytest.mark.parametrize(
    ("current", "min_version"),
    [("join", 1), ("invite", 1), ("knock", 7), ("leave", None), ("ban", None), (None, None)],
)
def test_self_leave(version: str, current: str | None, min_version: int | None) -> None:
    room = standard_room(version)
    if current is not None:
        room.member(CAROL, current)
    leave = room.make("m.room.member", CAROL, {"membership": "leave"}, state_key=CAROL)
    expect(room, leave, min_version is not None and int(version) >= min_version)


@pytest.mark.parametrize("version", ALL)
def test_kick(version: str) -> None:
    room = standard_room(version, kick=50)
    room.member(CAROL, "join")
    kick = room.make("m.room.member", MOD, {"membership": "leave"}, state_key=CAROL)
    room.check(kick)
    # Target at the sender's level.
    room.power_levels({"users": {**_base_users(room), CAROL: 50}, "kick": 50})
    with pytest.raises(AuthError, match="power level"):
        room.check(kick)


@pytest.mark.parametrize("version", ALL)
def test_kick_needs_kick_level_and_membership(version: str) -> None:
    room = standard_room(version, kick=60)
    room.member(CAROL, "join")
    kick = room.make("m.room.member", MOD, {"membership": "leave"}, state_key=CAROL)
    with pytest.raises(AuthError, match="kick"):
        room.check(kick)
    room = standard_room(version, kick=50)
    room.member(CAROL, "join")
    room.member(MOD, "leave")
    with pytest.raises(AuthError, match="joined"):
        room.check(kick)


@pytest.mark.parametrize("version", ALL)
@pytest.mark.parametrize(("kick", "ban", "ok"), [(50, 50, True), (50, 60, False), (60, 50, False)])
def test_unban_needs_kick_and_ban_levels(version: str, kick: int, ban: int, ok: bool) -> None:
    room = standard_room(version, kick=kick, ban=ban)
    room.member(CAROL, "ban", sender=ALICE)
    expect(room, room.make("m.room.member", MOD, {"membership": "leave"}, state_key=CAROL), ok)


# ======================================================================================
# m.room.member: ban
# ======================================================================================


@pytest.mark.parametrize("version", ALL)
@pytest.mark.parametrize(
    ("ban_level", "target_level", "sender_joined", "ok"),
    [
        (50, 0, True, True),
        (50, 49, True, True),
        (50, 50, True, False),
        (51, 0, True, False),
        (50, 0, False, False),
    ],
)
def test_ban(
    version: str, ban_level: int, target_level: int, sender_joined: bool, ok: bool
) -> None:
    users = {MOD: 50, CAROL: target_level}
    room = standard_room(version, ban=ban_level)
    pl = room.state[("m.room.power_levels", "")]
    room.power_levels({**pl.content, "users": {**pl.content["users"], **users}})
    if not sender_joined:
        room.member(MOD, "leave")
    expect(room, room.make("m.room.member", MOD, {"membership": "ban"}, state_key=CAROL), ok)


# ======================================================================================
# m.room.member: knock
# ======================================================================================


@pytest.mark.parametrize("version", ALL)
@pytest.mark.parametrize(
    ("join_rule", "current", "min_version"),
    [
        ("knock", None, 7),
        ("knock", "leave", 7),
        ("knock", "knock", 7),
        ("knock_restricted", None, 10),
        ("invite", None, None),
        ("public", None, None),
        ("restricted", None, None),
        ("knock", "invite", None),
        ("knock", "join", None),
        ("knock", "ban", None),
    ],
)
def test_knock(version: str, join_rule: str, current: str | None, min_version: int | None) -> None:
    room = standard_room(version, join_rule)
    if current is not None:
        room.member(CAROL, current, sender=ALICE if current in ("invite", "ban") else CAROL)
    knock = room.make("m.room.member", CAROL, {"membership": "knock"}, state_key=CAROL)
    expect(room, knock, min_version is not None and int(version) >= min_version)


@pytest.mark.parametrize("version", versions(7))
def test_knock_on_behalf_of_other_rejected(version: str) -> None:
    room = standard_room(version, "knock")
    with pytest.raises(AuthError, match="behalf"):
        room.check(room.make("m.room.member", ALICE, {"membership": "knock"}, state_key=CAROL))


# ======================================================================================
# Non-member events
# ======================================================================================


@pytest.mark.parametrize("version", ALL)
@pytest.mark.parametrize(
    ("membership", "ok"), [("join", True), ("invite", False), ("leave", False), (None, False)]
)
def test_sender_must_be_joined(version: str, membership: str | None, ok: bool) -> None:
    room = standard_room(version)
    if membership is not None:
        room.member(CAROL, membership, sender=ALICE if membership == "invite" else CAROL)
    expect(room, room.make("m.room.message", CAROL, {"body": "x"}), ok)


@pytest.mark.parametrize("version", ALL)
@pytest.mark.parametrize(("invite_level", "ok"), [(0, True), (50, True), (51, False)])
def test_third_party_invite_event_needs_invite_level(
    version: str, invite_level: int, ok: bool
) -> None:
    room = standard_room(version, invite=invite_level, events={"m.room.third_party_invite": 100})
    event = room.make("m.room.third_party_invite", MOD, {"public_key": "x"}, state_key="tok")
    # The events level for the type is not consulted: only the invite level.
    expect(room, event, ok)


@pytest.mark.parametrize("version", ALL)
@pytest.mark.parametrize(
    ("event_type", "state_key", "pl", "ok"),
    [
        ("m.room.message", None, {}, True),
        ("m.room.message", None, {"events_default": 51}, False),
        ("m.room.message", None, {"events": {"m.room.message": 51}}, False),
        ("m.room.message", None, {"events_default": 100, "events": {"m.room.message": 50}}, True),
        ("m.room.name", "", {}, True),
        ("m.room.name", "", {"state_default": 51}, False),
        ("m.room.name", "", {"events": {"m.room.name": 51}}, False),
        ("m.room.name", "", {"events_default": 51}, True),
        ("m.room.redaction", None, {"redact": 100}, True),  # redact level is not the send level
        ("m.room.redaction", None, {"events": {"m.room.redaction": 51}}, False),
    ],
)
def test_required_power_level(
    version: str, event_type: str, state_key: str | None, pl: dict[str, Any], ok: bool
) -> None:
    room = standard_room(version, **pl)
    content: dict[str, Any] = {"name": "n"}
    if event_type == "m.room.redaction":
        content["redacts"] = "$target:a.test"
    extra: dict[str, Any] = (
        {"redacts": "$target:a.test"} if event_type == "m.room.redaction" else {}
    )
    expect(room, room.make(event_type, MOD, content, state_key=state_key, **extra), ok)


@pytest.mark.parametrize("version", ALL)
@pytest.mark.parametrize(
    ("state_key", "ok"), [(MOD, True), (CAROL, False), ("@", False), ("x@y", True)]
)
def test_user_state_keys(version: str, state_key: str, ok: bool) -> None:
    room = standard_room(version)
    expect(room, room.make("org.example.state", MOD, {}, state_key=state_key), ok)


# ======================================================================================
# Redactions: v1–2 domain rule, v3+ handled on receipt
# ======================================================================================


@pytest.mark.parametrize("version", ALL)
@pytest.mark.parametrize(
    ("sender", "redacts", "redact_level", "ok_v1"),
    [
        (CAROL, "$target:a.test", 50, True),  # same server as the redaction's event ID
        (CAROL, "$target:b.test", 50, False),
        (CAROL, "$target:b.test", 0, True),  # sender has the redact level
        (CAROL, None, 50, False),
    ],
)
def test_redaction_rule(
    version: str, sender: str, redacts: str | None, redact_level: int, ok_v1: bool
) -> None:
    room = standard_room(version, redact=redact_level)
    room.member(CAROL, "join")
    content: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    if redacts is not None:
        if room.rv.updated_redaction_rules:
            content["redacts"] = redacts
        extra["redacts"] = redacts
    event = room.make("m.room.redaction", sender, content, **extra)
    # v3+: any redaction passes the auth rules; the check happens on receipt.
    expect(room, event, ok_v1 or room.rv.uses_event_id_hash)


# ======================================================================================
# m.room.power_levels
# ======================================================================================


def _pl_event(room: Room, content: Mapping[str, Any], sender: str = ALICE) -> Event:
    return room.make("m.room.power_levels", sender, content, state_key="")


def _base_users(room: Room) -> dict[str, Any]:
    return {MOD: 50} if room.rv.creators_have_infinite_power else {ALICE: 100, MOD: 50}


@pytest.mark.parametrize("version", ALL)
@pytest.mark.parametrize(
    ("make_content", "accepted_in"),
    [
        (lambda u: {"users": u}, ALL),
        (lambda u: {"users": u, "ban": "50"}, versions(1, 9)),
        (lambda u: {"users": u, "kick": " +050 "}, versions(1, 9)),
        (lambda u: {"users": u, "state_default": True}, versions(1, 9)),  # ignored pre-v10
        (lambda u: {"users": u, "invite": 1.5}, versions(1, 9)),
        (lambda u: {"users": u, "events": {"m.room.name": "50"}}, versions(1, 9)),
        (lambda u: {"users": u, "events": []}, versions(1, 9)),
        (lambda u: {"users": u, "notifications": {"room": "50"}}, versions(1, 9)),
        (lambda u: {"users": u, "notifications": "room"}, versions(1, 9)),
        (lambda u: {"users": {**u, CAROL: "30"}}, versions(1, 9)),
        (lambda u: {"users": {**u, CAROL: " -007 "}}, versions(1, 9)),
        (lambda u: {"users": {**u, CAROL: 30.7}}, versions(1, 5)),
        (lambda u: {"users": {**u, CAROL: "30.7"}}, []),
        (lambda u: {"users": {**u, CAROL: "abc"}}, []),
        (lambda u: {"users": {**u, CAROL: None}}, []),
        (lambda u: {"users": {**u, CAROL: True}}, []),
        (lambda u: {"users": {**u, "carol": 10}}, []),
        (lambda u: {"users": {**u, "@carol": 10}}, []),
        (lambda u: {"users": {**u, "@carol:bad host": 10}}, []),
        (lambda u: {"users": {**u, "@Weird Local:a.test": 10}}, ALL),  # historical localpart
        (lambda u: {"users": {**u, "@carol:[::1]:8448": 10}}, ALL),
        (lambda u: {"users": ["x"]}, []),
        (lambda u: {"users": {**u, CAROL: math.inf}}, []),
        (lambda u: {"users": u, "ban": math.nan}, versions(6, 9)),  # non-finite rejects in v1–5
        (lambda u: {"users": u, "events": {"m.room.name": -math.inf}}, versions(6, 9)),
        (lambda u: {}, ALL),
    ],
)
def test_power_levels_content_validity(
    version: str, make_content: Callable[[dict[str, Any]], dict[str, Any]], accepted_in: list[str]
) -> None:
    room = Room(version)
    room.member(ALICE, "join")  # no previous power levels: only the content rules apply
    expect(room, _pl_event(room, make_content(_base_users(room))), version in accepted_in)


@pytest.mark.parametrize("version", ALL)
def test_first_power_levels_may_set_anything(version: str) -> None:
    room = Room(version)
    room.member(ALICE, "join")
    content = {"users": {ALICE: 1000} if version != "12" else {MOD: 1000}, "ban": 9000}
    room.check(_pl_event(room, content))


@pytest.mark.parametrize("version", ALL)
@pytest.mark.parametrize("creator", ["sender", "additional"])
def test_creators_may_not_be_listed_in_v12(version: str, creator: str) -> None:
    extra = {"additional_creators": [CAROL]} if version == "12" else {}
    room = Room(version, create_content=extra)
    room.member(ALICE, "join")
    listed = ALICE if creator == "sender" else CAROL
    content = {"users": {listed: 100}}
    expect(room, _pl_event(room, content), version != "12")


@pytest.mark.parametrize("version", ALL)
@pytest.mark.parametrize(
    ("key", "old", "new", "ok"),
    [
        ("ban", None, 50, True),
        ("ban", None, 51, False),  # added above the sender
        ("ban", 50, 40, True),
        ("ban", 50, None, True),
        ("ban", 60, 40, False),  # current above the sender
        ("ban", 60, None, False),  # removed, current above the sender
        ("ban", 40, 50, True),
        ("ban", 40, 60, False),
        ("ban", 60, 60, True),  # unchanged
        ("users_default", 0, 51, False),
        ("events_default", 0, 50, True),
        ("state_default", 50, 51, False),
        ("redact", 70, 50, False),
        ("kick", 50, 0, True),
        ("invite", 0, 51, False),
    ],
)
def test_power_levels_top_level_changes(
    version: str, key: str, old: int | None, new: int | None, ok: bool
) -> None:
    room = standard_room(version, **({} if old is None else {key: old}))
    content = dict(room.state[("m.room.power_levels", "")].content)
    content.pop(key, None)
    if new is not None:
        content[key] = new
    expect(room, _pl_event(room, content, sender=MOD), ok)


@pytest.mark.parametrize("version", ALL)
@pytest.mark.parametrize("prop", ["events", "notifications"])
@pytest.mark.parametrize(
    ("old", "new", "ok"),
    [
        ({}, {"x": 50}, True),
        ({}, {"x": 51}, False),
        ({"x": 40}, {"x": 50}, True),
        ({"x": 40}, {"x": 51}, False),
        ({"x": 60}, {"x": 40}, False),
        ({"x": 60}, {}, False),
        ({"x": 50}, {}, True),
        ({"x": 60}, {"x": 60, "y": 10}, True),
    ],
)
def test_power_levels_map_changes(
    version: str, prop: str, old: dict[str, int], new: dict[str, int], ok: bool
) -> None:
    room = standard_room(version, **{prop: old})
    content = {**room.state[("m.room.power_levels", "")].content, prop: new}
    # notifications are only protected from v6.
    checked = prop == "events" or room.rv.limit_notifications_power_levels
    expect(room, _pl_event(room, content, sender=MOD), ok or not checked)


@pytest.mark.parametrize("version", ALL)
@pytest.mark.parametrize(
    ("old", "new", "ok"),
    [
        ({CAROL: 40}, {CAROL: 0}, True),  # demote a lower user
        ({CAROL: 40}, {}, True),
        ({CAROL: 50}, {CAROL: 0}, False),  # demote an equal
        ({CAROL: 50}, {}, False),
        ({CAROL: 60}, {CAROL: 60}, True),  # untouched
        ({}, {CAROL: 50}, True),  # promote up to own level
        ({}, {CAROL: 51}, False),
        ({CAROL: 10}, {CAROL: 51}, False),
        ({MOD: 50}, {MOD: 10}, True),  # own entry may be lowered
        ({MOD: 50}, {}, True),
        ({MOD: 50}, {MOD: 51}, False),  # but not raised
    ],
)
def test_power_levels_user_changes(
    version: str, old: dict[str, int], new: dict[str, int], ok: bool
) -> None:
    room = Room(version)
    room.member(ALICE, "join")
    room.member(MOD, "join")
    base = {} if room.rv.creators_have_infinite_power else {ALICE: 100}
    room.power_levels({"users": {**base, MOD: 50, **old}})
    # MOD keeps its own entry unless the case is about it.
    new_users = {**base, **({} if MOD in old else {MOD: 50}), **new}
    expect(room, _pl_event(room, {"users": new_users}, sender=MOD), ok)


@pytest.mark.parametrize("version", ALL)
def test_stringy_values_compare_by_value(version: str) -> None:
    room = standard_room(version)
    users = _base_users(room)
    room.power_levels({"users": users, "ban": "75"})  # hand-built state, not validated
    # v1–9: "75" and 75 are the same level, so MOD (50) changes nothing. v10+: the old
    # string is unreadable (treated as absent), so 75 is an addition above MOD's level.
    expect(
        room, _pl_event(room, {"users": users, "ban": 75}, sender=MOD), version in versions(1, 9)
    )


def test_v12_creator_has_unbounded_power() -> None:
    room = standard_room("12")
    room.check(_pl_event(room, {"users": {MOD: 10**15, CAROL: 99}, "ban": 10**15}))
    with pytest.raises(AuthError):
        room.check(_pl_event(room, {"users": {MOD: 10**15}}, sender=MOD))


@pytest.mark.parametrize("version", ALL)
def test_power_levels_state_key_rule_applies(version: str) -> None:
    room = standard_room(version)
    room.check(_pl_event(room, {"users": _base_users(room)}))
    bad = room.make("m.room.power_levels", ALICE, {"users": _base_users(room)}, state_key=CAROL)
    with pytest.raises(AuthError, match="state_key"):
        room.check(bad)


# ======================================================================================
# Power-level helpers
# ======================================================================================


@pytest.mark.parametrize("version", ALL)
def test_user_power_level_without_power_levels_event(version: str) -> None:
    room = Room(version)
    expected_creator: float = math.inf if room.rv.creators_have_infinite_power else 100
    assert get_user_power_level(ALICE, room.state) == expected_creator
    assert get_user_power_level(CAROL, room.state) == 0
    assert get_user_power_level(CAROL, {}) == 0


@pytest.mark.parametrize("version", ALL)
def test_user_power_level_from_power_levels(version: str) -> None:
    room = standard_room(version, users_default=5)
    assert get_user_power_level(MOD, room.state) == 50
    assert get_user_power_level(CAROL, room.state) == 5
    expected: float = math.inf if room.rv.creators_have_infinite_power else 100
    assert get_user_power_level(ALICE, room.state) == expected


@pytest.mark.parametrize("version", ALL)
def test_creator_loses_default_100_once_power_levels_exist(version: str) -> None:
    room = Room(version)
    room.power_levels({"users": {MOD: 50}})
    expected: float = math.inf if room.rv.creators_have_infinite_power else 0
    assert get_user_power_level(ALICE, room.state) == expected


def test_additional_creators_have_infinite_power_in_v12() -> None:
    room = Room("12", create_content={"additional_creators": [CAROL]})
    room.power_levels({})
    assert get_user_power_level(CAROL, room.state) == math.inf
    assert room_creators(room.create) == frozenset({ALICE, CAROL})


@pytest.mark.parametrize(
    ("version", "content", "expected"),
    [
        ("1", {"creator": CAROL}, {CAROL}),
        ("10", {"creator": CAROL}, {CAROL}),
        ("10", {"creator": 5}, set()),
        ("11", {"creator": CAROL, "additional_creators": [BOB]}, {ALICE}),
        ("12", {"additional_creators": [BOB, 7]}, {ALICE, BOB}),
    ],
)
def test_room_creators(version: str, content: dict[str, Any], expected: set[str]) -> None:
    room = Room(version, create_content=content)
    assert room_creators(room.create) == frozenset(expected)


@pytest.mark.parametrize("version", ALL)
@pytest.mark.parametrize(
    ("sender", "action", "ok"),
    [
        (CAROL, "invite", True),  # invite level defaults to 0
        (CAROL, "kick", False),  # kick level defaults to 50
        (MOD, "kick", True),
        (CAROL, "ban", False),  # ban level defaults to 50
        (MOD, "ban", True),
        (CAROL, "message", True),  # events_default defaults to 0
        (CAROL, "state", False),  # state_default defaults to 50
        (MOD, "state", True),
    ],
)
def test_default_levels(version: str, sender: str, action: str, ok: bool) -> None:
    room = standard_room(version)
    room.member(CAROL, "join")
    room.member(BOB, "join")
    if action == "message":
        event = room.make("m.room.message", sender, {})
    elif action == "state":
        event = room.make("m.room.topic", sender, {"topic": "t"}, state_key="")
    else:
        membership = {"kick": "leave"}.get(action, action)
        target = "@dave:d.test" if action == "invite" else BOB
        event = room.make("m.room.member", sender, {"membership": membership}, state_key=target)
    expect(room, event, ok)


@pytest.mark.parametrize("version", ALL)
def test_send_level(version: str) -> None:
    room = standard_room(version, events_default=10, state_default=20, events={"m.room.name": 30})
    pl = room.state[("m.room.power_levels", "")]
    assert get_send_level("m.room.message", None, pl) == 10
    assert get_send_level("m.room.topic", "", pl) == 20
    assert get_send_level("m.room.name", "", pl) == 30
    assert get_send_level("m.room.message", None, None) == 0
    assert get_send_level("m.room.topic", "", None) == 50


@pytest.mark.parametrize("version", ALL)
def test_named_levels(version: str) -> None:
    stringy = not KNOWN_ROOM_VERSIONS[version].integer_power_levels
    room = standard_room(version, kick="75" if stringy else 75, ban="x")
    assert get_named_level(room.state, "kick", 50) == 75
    assert get_named_level(room.state, "ban", 50) == 50  # unreadable: default
    assert get_named_level(room.state, "invite", 0) == 0
    assert get_named_level({}, "redact", 50) == 50


# ======================================================================================
# Auth events selection
# ======================================================================================


def _create(rv: RoomVersion) -> list[StateKey]:
    return [] if rv.room_id_is_create_event_id else [("m.room.create", "")]


@pytest.mark.parametrize("version", ALL)
def test_selection_for_create_is_empty(version: str) -> None:
    rv = KNOWN_ROOM_VERSIONS[version]
    assert auth_types_for_event(rv, "m.room.create", ALICE, "", {}) == []


@pytest.mark.parametrize("version", ALL)
def test_selection_for_message(version: str) -> None:
    rv = KNOWN_ROOM_VERSIONS[version]
    assert auth_types_for_event(rv, "m.room.message", ALICE, None, {}) == [
        *_create(rv),
        ("m.room.power_levels", ""),
        ("m.room.member", ALICE),
    ]


@pytest.mark.parametrize("version", ALL)
@pytest.mark.parametrize("membership", ["join", "invite", "knock", "leave", "ban"])
def test_selection_for_membership(version: str, membership: str) -> None:
    rv = KNOWN_ROOM_VERSIONS[version]
    got = auth_types_for_event(rv, "m.room.member", ALICE, CAROL, {"membership": membership})
    expected = [
        *_create(rv),
        ("m.room.power_levels", ""),
        ("m.room.member", ALICE),
        ("m.room.member", CAROL),
    ]
    if membership in ("join", "invite", "knock"):
        expected.append(("m.room.join_rules", ""))
    assert got == expected


@pytest.mark.parametrize("version", ALL)
def test_selection_for_own_join_has_no_duplicates(version: str) -> None:
    rv = KNOWN_ROOM_VERSIONS[version]
    got = auth_types_for_event(rv, "m.room.member", CAROL, CAROL, {"membership": "join"})
    assert got == [
        *_create(rv),
        ("m.room.power_levels", ""),
        ("m.room.member", CAROL),
        ("m.room.join_rules", ""),
    ]


@pytest.mark.parametrize("version", ALL)
def test_selection_for_third_party_invite(version: str) -> None:
    rv = KNOWN_ROOM_VERSIONS[version]
    content = {
        "membership": "invite",
        "third_party_invite": {"signed": {"token": "tok", "mxid": CAROL}},
    }
    got = auth_types_for_event(rv, "m.room.member", ALICE, CAROL, content)
    assert got[-1] == ("m.room.third_party_invite", "tok")
    bad = {"membership": "invite", "third_party_invite": {"signed": {"token": 5}}}
    assert ("m.room.third_party_invite", "5") not in auth_types_for_event(
        rv, "m.room.member", ALICE, CAROL, bad
    )


@pytest.mark.parametrize("version", ALL)
def test_selection_for_restricted_join(version: str) -> None:
    rv = KNOWN_ROOM_VERSIONS[version]
    content = {"membership": "join", "join_authorised_via_users_server": MOD}
    got = auth_types_for_event(rv, "m.room.member", CAROL, CAROL, content)
    assert (("m.room.member", MOD) in got) == rv.restricted_join_rule
    leave = {"membership": "leave", "join_authorised_via_users_server": MOD}
    assert ("m.room.member", MOD) not in auth_types_for_event(
        rv, "m.room.member", CAROL, CAROL, leave
    )


# ======================================================================================
# check_auth_events
# ======================================================================================


def _listed_room(version: str) -> tuple[Room, list[Event], Event | None]:
    """A standard room, and its state as an event would list it in auth_events."""
    room = standard_room(version, "invite")
    listed = [
        e
        for k, e in room.state.items()
        if k != ("m.room.create", "") or not room.rv.room_id_is_create_event_id
    ]
    create = room.create if room.rv.room_id_is_create_event_id else None
    return room, listed, create


def _selected(room: Room, event: Event, listed: list[Event]) -> list[Event]:
    keys = set(
        auth_types_for_event(room.rv, event.type, event.sender, event.state_key, event.content)
    )
    return [e for e in listed if e.key in keys]


@pytest.mark.parametrize("version", ALL)
def test_check_auth_events_passes_valid_event(version: str) -> None:
    room, listed, create = _listed_room(version)
    msg = room.make("m.room.message", MOD, {"body": "hi"})
    check_auth_events(msg, _selected(room, msg, listed), create)
    invite = room.make("m.room.member", MOD, {"membership": "invite"}, state_key=CAROL)
    check_auth_events(invite, _selected(room, invite, listed), create)


@pytest.mark.parametrize("version", ALL)
def test_check_auth_events_runs_the_rules(version: str) -> None:
    room, listed, create = _listed_room(version)
    join = room.make("m.room.member", CAROL, {"membership": "join"}, state_key=CAROL)
    with pytest.raises(AuthError, match="join rule"):
        check_auth_events(join, _selected(room, join, listed), create)


@pytest.mark.parametrize("version", ALL)
def test_check_auth_events_create_event(version: str) -> None:
    room = Room(version)
    check_auth_events(room.create, [], None)


@pytest.mark.parametrize("version", ALL)
def test_check_auth_events_duplicates(version: str) -> None:
    room, listed, create = _listed_room(version)
    msg = room.make("m.room.message", MOD, {})
    auth = _selected(room, msg, listed)
    older_pl = room.make("m.room.power_levels", ALICE, {"users": _base_users(room)}, state_key="")
    with pytest.raises(AuthError, match="duplicate"):
        check_auth_events(msg, [*auth, older_pl], create)


@pytest.mark.parametrize("version", ALL)
def test_check_auth_events_unselected_entry(version: str) -> None:
    room, listed, create = _listed_room(version)
    msg = room.make("m.room.message", MOD, {})
    join_rules = room.state[("m.room.join_rules", "")]  # not selected for a message
    with pytest.raises(AuthError, match="may cite"):
        check_auth_events(msg, [*_selected(room, msg, listed), join_rules], create)


@pytest.mark.parametrize("version", ALL)
def test_check_auth_events_non_state_entry(version: str) -> None:
    room, listed, create = _listed_room(version)
    msg = room.make("m.room.message", MOD, {})
    other = room.make("m.room.message", MOD, {})
    with pytest.raises(AuthError, match="state event"):
        check_auth_events(msg, [*_selected(room, msg, listed), other], create)


@pytest.mark.parametrize("version", ALL)
def test_check_auth_events_rejected_entry(version: str) -> None:
    room, listed, create = _listed_room(version)
    msg = room.make("m.room.message", MOD, {})
    auth = _selected(room, msg, listed)
    room.state[("m.room.power_levels", "")].rejected = True
    with pytest.raises(AuthError, match="rejected"):
        check_auth_events(msg, auth, create)


@pytest.mark.parametrize("version", versions(1, 11))
def test_check_auth_events_create_required_before_v12(version: str) -> None:
    room, listed, create = _listed_room(version)
    msg = room.make("m.room.message", MOD, {})
    auth = [e for e in _selected(room, msg, listed) if e.type != "m.room.create"]
    with pytest.raises(AuthError, match="create"):
        check_auth_events(msg, auth, room.create)  # passing it separately does not help


@pytest.mark.parametrize("version", ALL)
def test_check_auth_events_room_id_mismatch(version: str) -> None:
    room, listed, create = _listed_room(version)
    msg = room.make("m.room.message", MOD, {})
    auth = _selected(room, msg, listed)
    pl = room.state[("m.room.power_levels", "")]
    foreign = Event(dict(pl.pdu, room_id="!other:a.test"), room.rv, pl.event_id)
    auth = [foreign if e is pl else e for e in auth]
    with pytest.raises(AuthError, match="another room"):
        check_auth_events(msg, auth, create)


def test_check_auth_events_v12_create_must_not_be_listed() -> None:
    room, listed, create = _listed_room("12")
    msg = room.make("m.room.message", MOD, {})
    with pytest.raises(AuthError, match="may cite"):
        check_auth_events(msg, [*_selected(room, msg, listed), room.create], create)


def test_check_auth_events_v12_needs_matching_accepted_create() -> None:
    room, listed, create = _listed_room("12")
    msg = room.make("m.room.message", MOD, {})
    auth = _selected(room, msg, listed)
    with pytest.raises(AuthError, match="create"):
        check_auth_events(msg, auth, None)
    other = Room("12", create_content={"x": 1})
    other.create = Event(dict(other.create.pdu), other.rv, "$different")
    with pytest.raises(AuthError, match="room_id"):
        check_auth_events(msg, auth, other.create)
    assert create is not None
    create.rejected = True
    with pytest.raises(AuthError, match="rejected"):
        check_auth_events(msg, auth, create)


@pytest.mark.parametrize("version", ALL)
def test_check_auth_events_passes_signature_callback(version: str) -> None:
    room, listed, create = _listed_room(version)
    msg = room.make("m.room.message", MOD, {})
    auth = _selected(room, msg, listed)
    check_auth_events(msg, auth, create, verify_signature=lambda e, s: True)
    with pytest.raises(AuthError, match="signed"):
        check_auth_events(msg, auth, create, verify_signature=lambda e, s: False)
