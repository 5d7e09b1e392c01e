"""What one process is made of, handed to every API module when it installs its routes.

Writer-only parts (the persister and the handlers that create events) are present only on
the process that writes the stream; elsewhere they are None, and write operations are
forwarded to the writer through `writes`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs
from signedjson.key import SigningKey

from homeserver.handlers.auth import Authenticator
from homeserver.notifier import Notifier
from replication.streams import StreamPositionTracker
from storage.database import Database
from storage.stores.accounts import AccountStore
from storage.stores.events import EventStore
from workers.config import HomeserverConfig, ProcessConfig

if TYPE_CHECKING:
    from homeserver.handlers.accounts import AccountHandler
    from homeserver.handlers.event_creation import EventCreationHandler
    from homeserver.handlers.rooms import RoomHandler
    from homeserver.handlers.writes import Writes


@attrs.define
class HomeServerContext:
    config: HomeserverConfig
    me: ProcessConfig
    reactor: Any
    clock_ms: Callable[[], int]
    db: Database
    signing_key: SigningKey
    account_store: AccountStore
    event_store: EventStore
    notifier: Notifier
    auth: Authenticator
    # stream name -> this process's view of that stream.
    trackers: dict[str, StreamPositionTracker]
    writes: Writes = attrs.field(default=None)
    # Present only on the events writer.
    event_creation: EventCreationHandler | None = None
    rooms: RoomHandler | None = None
    accounts: AccountHandler | None = None
    # Free-form slots for handlers that modules share (e.g. "visibility").
    extras: dict[str, Any] = attrs.field(factory=dict)

    @property
    def server_name(self) -> str:
        return self.config.server_name

    @property
    def events_tracker(self) -> StreamPositionTracker:
        return self.trackers["events"]

    def writes_stream(self, stream: str) -> bool:
        return self.config.writer_of(stream).name == self.me.name
