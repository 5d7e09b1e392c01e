"""Composes a process from the shared parts: the writer and every worker run the same code.

What differs between processes is only which parts are wired in: the events writer gets
the persister and serves the replication API; the others follow the stream and forward
writes.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import attrs
from twisted.internet import defer
from twisted.internet.endpoints import TCP4ServerEndpoint, TCP6ServerEndpoint
from twisted.web.server import Site

from homeserver.handlers.accounts import AccountHandler
from homeserver.handlers.auth import Authenticator
from homeserver.handlers.event_creation import EventCreationHandler
from homeserver.handlers.messages import MessagesHandler
from homeserver.handlers.persister import EventPersister
from homeserver.handlers.rooms import RoomHandler
from homeserver.handlers.writes import ForwardedWrites, LocalWrites, Writes, build_write_operations
from homeserver.http.server import JsonResource, MatrixSite, Router
from homeserver.metrics import instrument_reactor, metrics_resource
from homeserver.notifier import Notifier
from homeserver.rest.client import ClientApi
from homeserver.rest.server_info import ServerInfoApi
from homeserver.sync.handler import SyncHandler
from replication import wire
from replication.follower import StreamFollower
from replication.http import ReplicationClient, ReplicationServer
from replication.redis import RedisReplicationLink
from replication.streams import StreamIdGenerator, StreamPositionTracker
from storage.database import Database
from storage.migrations import SchemaError, check_schema, prepare_database
from storage.stores.accounts import AccountStore
from storage.stores.event_persist import EventPersistStore
from storage.stores.events import EventStore
from workers.config import HomeserverConfig, ListenAddress, ProcessConfig
from workers.generate_config import load_signing_key
from workers.logging_setup import setup_logging

logger = logging.getLogger("ganglion")

EVENTS = "events"


def _listen(reactor: Any, address: ListenAddress, site: Site) -> defer.Deferred[Any]:
    host = address.host.strip("[]")
    if ":" in host:
        return TCP6ServerEndpoint(reactor, address.port, interface=host).listen(site)
    return TCP4ServerEndpoint(reactor, address.port, interface=host).listen(site)


def _url(address: ListenAddress) -> str:
    host = address.host if ":" not in address.host.strip("[]") else f"[{address.host.strip('[]')}]"
    return f"http://{host}:{address.port}"


@attrs.define
class Process:
    """Everything one running process is made of."""

    config: HomeserverConfig
    me: ProcessConfig
    reactor: Any
    db: Database
    events_tracker: StreamPositionTracker
    notifier: Notifier
    writes: Writes
    redis: RedisReplicationLink | None = None
    follower: StreamFollower | None = None


async def build_process(config: HomeserverConfig, name: str, reactor: Any) -> Process:
    me = config.process(name)
    clock_ms = lambda: int(reactor.seconds() * 1000)  # noqa: E731
    db = Database(config.database)
    writer = config.writer_of(EVENTS)
    is_writer = writer.name == me.name
    if me.name == config.main.name:
        await prepare_database(db)
    else:
        await check_schema(db)

    signing_key = load_signing_key(config.signing_key_path)
    account_store = AccountStore(db)
    event_store = EventStore(db)
    notifier = Notifier(reactor)
    tracker = StreamPositionTracker(EVENTS, writer.name, reactor)
    redis_link: RedisReplicationLink | None = None
    follower: StreamFollower | None = None
    writes: Writes

    if is_writer:
        id_gen = StreamIdGenerator(await event_store.get_max_stream_ordering())
        tracker.advance(id_gen.current)

        def publish(pos: int) -> None:
            if redis_link is not None:
                redis_link.publish(wire.PositionMessage(EVENTS, me.name, pos))

        persister = EventPersister(EventPersistStore(db), id_gen, tracker, notifier, publish, clock_ms)
        creation = EventCreationHandler(config.server_name, signing_key, event_store, persister, clock_ms)
        accounts = AccountHandler(
            config.server_name,
            account_store,
            clock_ms,
            enable_registration=config.enable_registration,
            registration_shared_secret=config.registration_shared_secret,
            bcrypt_rounds=int(getattr(config, "bcrypt_rounds", 12)),
        )
        operations = build_write_operations(accounts, RoomHandler(creation), creation)
        writes = LocalWrites(operations)
        if config.redis.enabled:
            redis_link = RedisReplicationLink(
                config.redis, reactor, on_position=lambda m: None, on_connected=lambda: None,
                on_disconnected=lambda: None,
            )
        if me.replication_listen is not None:
            assert config.replication_secret, "replication_secret is required with a replication listener"
            server = ReplicationServer(config.replication_secret, lambda: {EVENTS: tracker.position})
            for op_name, op in operations.items():
                server.register(op_name, op)
            await _listen(
                reactor,
                me.replication_listen,
                MatrixSite(server.resource(), max_body_size=config.limits.max_json_body_size, name=me.name),
            )
    else:
        assert writer.replication_listen is not None and config.replication_secret
        client = ReplicationClient(reactor, _url(writer.replication_listen), config.replication_secret)
        start = await _initial_position(client, event_store, reactor)
        tracker.advance(start)

        async def apply_rows(after: int, up_to: int) -> int:
            batch = 1000
            rows = await event_store.get_stream_rows(after, up_to, limit=batch)
            notifier.on_new_events(rows)
            if len(rows) < batch:
                return up_to
            return rows[-1].stream_ordering

        follower = StreamFollower(tracker, apply_rows, client.positions, reactor)
        redis_link = RedisReplicationLink(
            config.redis,
            reactor,
            on_position=follower.on_position,
            on_connected=follower.on_redis_connected,
            on_disconnected=follower.on_redis_disconnected,
        )
        # Until Redis answers, poll.
        follower.on_redis_disconnected()
        writes = ForwardedWrites(
            client, {EVENTS: follower}, config.limits.replication_wait_timeout_ms / 1000.0
        )

    if redis_link is not None:
        redis_link.start()

    router = Router()
    ClientApi(
        config=config,
        auth=Authenticator(account_store),
        writes=writes,
        sync=SyncHandler(event_store, notifier, tracker, clock_ms),
        messages=MessagesHandler(event_store, tracker, clock_ms),
    ).register_routes(router)
    ServerInfoApi(config=config, signing_key=signing_key, writes=writes, clock_ms=clock_ms).register_routes(router)

    if me.listen is not None:
        site = MatrixSite(
            JsonResource(router, cors_origins=config.cors_allowed_origins),
            max_body_size=config.limits.max_json_body_size,
            name=me.name,
        )
        await _listen(reactor, me.listen, site)
    if me.metrics_listen is not None:
        metrics_site = Site(metrics_resource(me.name))
        metrics_site.noisy = False
        await _listen(reactor, me.metrics_listen, metrics_site)
    return Process(config, me, reactor, db, tracker, notifier, writes, redis_link, follower)


async def _initial_position(client: ReplicationClient, store: EventStore, reactor: Any) -> int:
    """A new worker starts at the writer's current position (nobody waits on older rows)."""
    from twisted.internet import task

    deadline = time.monotonic() + 30
    while True:
        try:
            positions = await client.positions()
            return int(positions.get(EVENTS, 0))
        except Exception:
            if time.monotonic() > deadline:
                logger.warning("writer unreachable at start; starting from the database's position")
                return await store.get_max_stream_ordering()
            await task.deferLater(reactor, 0.5, lambda: None)


def run_process(config: HomeserverConfig, name: str) -> int:
    from twisted.internet import reactor

    import os

    # An override for debugging a deployment without editing its config.
    setup_logging(name, os.environ.get("GANGLION_LOG_LEVEL", config.log_level), config.log_format)
    instrument_reactor(reactor)
    status = {"code": 0}

    async def start() -> None:
        try:
            proc = await build_process(config, name, reactor)
        except Exception as e:
            logger.error("failed to start: %s", e, exc_info=not isinstance(e, SchemaError | OSError))
            status["code"] = 1
            reactor.stop()  # type: ignore[attr-defined]
            return
        logger.info(
            "started",
            extra={
                "listen": str(proc.me.listen),
                "metrics": str(proc.me.metrics_listen),
                "events_position": proc.events_tracker.position,
            },
        )

    reactor.callWhenRunning(lambda: defer.ensureDeferred(start()))  # type: ignore[attr-defined]
    reactor.run()  # type: ignore[attr-defined]
    sys.stdout.flush()
    return status["code"]
