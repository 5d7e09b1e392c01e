"""Composes a process from the shared parts: the writer and every worker run the same code.

What differs between processes is only which parts are wired in: a stream's writer gets
its position generator (and, for events, the persister) and serves the replication API
for the writes of that stream; the others follow the stream and forward those writes.
"""

from __future__ import annotations

import functools
import importlib
import logging
import os
import sys
import time
from typing import Any

from twisted.internet import defer, task
from twisted.internet.endpoints import TCP4ServerEndpoint, TCP6ServerEndpoint
from twisted.internet.error import ConnectionRefusedError
from twisted.web.server import Site

from homeserver.context import HomeServerContext
from homeserver.handlers.accounts import AccountHandler
from homeserver.handlers.auth import Authenticator
from homeserver.handlers.directory import DirectoryHandler
from homeserver.handlers.event_creation import EventCreationHandler
from homeserver.handlers.persister import EventPersister
from homeserver.handlers.rooms import RoomHandler
from homeserver.handlers.writes import Operation, WriteDispatcher
from homeserver.http.server import JsonResource, MatrixSite, Router
from homeserver.metrics import instrument_reactor, metrics_resource
from homeserver.notifier import Notifier
from homeserver.rest import API_MODULES
from homeserver.streams import STREAM_DEFINITIONS
from replication import wire
from replication.follower import AppliedRows, StreamFollower
from replication.http import ReplicationClient, ReplicationServer
from replication.redis import RedisReplicationLink
from replication.streams import StreamIdGenerator, StreamPositionTracker
from storage.database import Database
from storage.migrations import SchemaError, check_schema, prepare_database
from storage.stores.accounts import AccountStore
from storage.stores.event_persist import EventPersistStore
from storage.stores.events import EventStore
from storage.stores.state import StateStore, configure_state_persist_hook
from workers.config import HomeserverConfig, ListenAddress
from workers.generate_config import load_signing_key
from workers.logging_setup import setup_logging

logger = logging.getLogger("ganglion")


def _listen(reactor: Any, address: ListenAddress, site: Site) -> defer.Deferred[Any]:
    host = address.host.strip("[]")
    if ":" in host:
        return TCP6ServerEndpoint(reactor, address.port, interface=host).listen(site)
    return TCP4ServerEndpoint(reactor, address.port, interface=host).listen(site)


def _url(address: ListenAddress) -> str:
    host = address.host.strip("[]")
    return f"http://[{host}]:{address.port}" if ":" in host else f"http://{host}:{address.port}"


class Process:
    """A running process: its context plus the replication machinery around it."""

    def __init__(self, ctx: HomeServerContext) -> None:
        self.ctx = ctx
        self.redis: RedisReplicationLink | None = None
        self.followers: dict[str, StreamFollower] = {}
        self.id_generators: dict[str, StreamIdGenerator] = {}


async def build_process(config: HomeserverConfig, name: str, reactor: Any) -> Process:
    me = config.process(name)

    def clock_ms() -> int:
        return int(reactor.seconds() * 1000)

    db = Database(config.database)
    if me.name == config.main.name:
        await prepare_database(db)
    else:
        await check_schema(db)

    account_store = AccountStore(db)
    ctx = HomeServerContext(
        config=config,
        me=me,
        reactor=reactor,
        clock_ms=clock_ms,
        db=db,
        signing_key=load_signing_key(config.signing_key_path),
        account_store=account_store,
        event_store=EventStore(db),
        notifier=Notifier(reactor),
        auth=Authenticator(account_store),
        trackers={},
    )
    # Importing storage.stores.state registered its persist hook (used on the events writer).
    configure_state_persist_hook(max_delta_chain=config.limits.state_group_max_delta_chain)
    ctx.extras["state_store"] = StateStore(
        db,
        max_cached_entries=config.limits.state_cache_max_entries,
        event_cache_size=config.limits.state_event_cache_size,
    )
    proc = Process(ctx)
    modules = [importlib.import_module(m) for m in API_MODULES]
    my_streams = [s for s in STREAM_DEFINITIONS if ctx.writes_stream(s)]

    # Streams this process writes: positions continue from what is stored.
    for stream in my_streams:
        id_gen = StreamIdGenerator(await STREAM_DEFINITIONS[stream].max_position(ctx))
        proc.id_generators[stream] = id_gen
        tracker = StreamPositionTracker(stream, me.name, reactor)
        tracker.advance(id_gen.current)
        ctx.trackers[stream] = tracker

    def publish(stream: str, pos: int) -> None:
        if proc.redis is not None:
            proc.redis.publish(wire.PositionMessage(stream, me.name, pos))

    # For the writers of the other streams (homeserver/handlers/stream_writer.py).
    ctx.extras["id_generators"] = proc.id_generators
    ctx.extras["publish_position"] = publish

    if "events" in my_streams:
        persister = EventPersister(
            EventPersistStore(db),
            proc.id_generators["events"],
            ctx.trackers["events"],
            ctx.notifier,
            lambda pos: publish("events", pos),
            clock_ms,
        )
        ctx.event_creation = EventCreationHandler(
            config.server_name, ctx.signing_key, ctx.event_store, persister, clock_ms
        )
        ctx.rooms = RoomHandler(
            ctx.event_creation,
            DirectoryHandler.install(ctx),
            default_room_version=config.default_room_version,
        )
        ctx.accounts = AccountHandler(
            config.server_name,
            account_store,
            clock_ms,
            enable_registration=config.enable_registration,
            registration_shared_secret=config.registration_shared_secret,
            bcrypt_rounds=config.bcrypt_rounds,
        )

    # Write operations: run here for the streams we write, forwarded otherwise.
    op_streams: dict[str, str] = {}
    local_ops: dict[str, Operation] = {}
    for module in modules:
        streams_of = getattr(module, "WRITE_STREAMS", {})
        op_streams.update(streams_of)
        if any(streams_of.get(op) in my_streams for op in streams_of):
            for op_name, op in module.write_operations(ctx).items():
                if streams_of[op_name] in my_streams:
                    local_ops[op_name] = op

    # Streams written elsewhere: follow them.
    clients: dict[str, ReplicationClient] = {}
    for stream, definition in STREAM_DEFINITIONS.items():
        if stream in my_streams:
            continue
        writer = config.writer_of(stream)
        assert writer.replication_listen is not None and config.replication_secret
        client = ReplicationClient(
            reactor, _url(writer.replication_listen), config.replication_secret
        )
        clients[stream] = client
        tracker = StreamPositionTracker(stream, writer.name, reactor)
        tracker.advance(await _initial_position(client, stream, definition.max_position, ctx))
        ctx.trackers[stream] = tracker

        async def apply(after: int, up_to: int, d: Any = definition) -> AppliedRows:
            applied: AppliedRows = await d.apply_rows(ctx, after, up_to)
            return applied

        proc.followers[stream] = StreamFollower(tracker, apply, client.positions, reactor)

    # For followers that fetch rows from their writer (streams kept in its memory).
    ctx.extras["replication_clients"] = clients
    ctx.writes = WriteDispatcher(
        local_ops,
        op_streams,
        clients,
        proc.followers,
        config.limits.replication_wait_timeout_ms / 1000.0,
    )

    if my_streams and me.replication_listen is not None:
        assert config.replication_secret, (
            "replication_secret is required with a replication listener"
        )
        server = ReplicationServer(
            config.replication_secret, lambda: {s: ctx.trackers[s].position for s in my_streams}
        )
        for op_name, op in local_ops.items():
            server.register(op_name, op)
        for stream in my_streams:
            rows = STREAM_DEFINITIONS[stream].rows
            if rows is not None:
                server.register_rows(stream, functools.partial(rows, ctx))
        await _listen(
            reactor,
            me.replication_listen,
            MatrixSite(
                server.resource(), max_body_size=config.limits.max_json_body_size, name=me.name
            ),
        )

    # Until Redis answers (or with no Redis at all), poll the writers.
    for follower in proc.followers.values():
        follower.on_redis_disconnected()
    if config.redis.enabled:
        followers = proc.followers

        def on_position(msg: wire.PositionMessage) -> None:
            follower = followers.get(msg.stream)
            if follower is not None:
                follower.on_position(msg)

        proc.redis = RedisReplicationLink(
            config.redis,
            reactor,
            on_position=on_position,
            on_connected=lambda: _each(f.on_redis_connected for f in followers.values()),
            on_disconnected=lambda: _each(f.on_redis_disconnected for f in followers.values()),
        )
        proc.redis.start()

    router = Router()
    for module in modules:
        module.install(ctx, router)

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
    return proc


def _each(calls: Any) -> None:
    for call in calls:
        call()


async def _initial_position(
    client: ReplicationClient, stream: str, max_position: Any, ctx: HomeServerContext
) -> int:
    """A new follower starts at the writer's current position (nobody waits on older rows)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            positions = await client.positions()
            return int(positions.get(stream, 0))
        except Exception as e:
            # Refused: the writer is not running (e.g. main starting before the worker that
            # writes a stream), so no write is in flight and the stored position is exact.
            refused = isinstance(e.__cause__, ConnectionRefusedError)
            if refused or time.monotonic() > deadline:
                logger.warning(
                    "writer unreachable at start; starting from the database's position",
                    extra={"stream": stream},
                )
                return int(await max_position(ctx))
            await task.deferLater(ctx.reactor, 0.5, lambda: None)


def run_process(config: HomeserverConfig, name: str) -> int:
    from twisted.internet import reactor

    # An override for debugging a deployment without editing its config.
    setup_logging(name, os.environ.get("GANGLION_LOG_LEVEL", config.log_level), config.log_format)
    instrument_reactor(reactor)
    status = {"code": 0}

    async def start() -> None:
        try:
            proc = await build_process(config, name, reactor)
        except Exception as e:
            logger.error(
                "failed to start: %s", e, exc_info=not isinstance(e, SchemaError | OSError)
            )
            status["code"] = 1
            reactor.stop()  # type: ignore[attr-defined,misc]
            return
        logger.info(
            "started",
            extra={
                "listen": str(proc.ctx.me.listen),
                "metrics": str(proc.ctx.me.metrics_listen),
                "positions": {s: t.position for s, t in proc.ctx.trackers.items()},
            },
        )

    reactor.callWhenRunning(lambda: defer.ensureDeferred(start()))  # type: ignore[attr-defined]
    reactor.run()  # type: ignore[attr-defined,misc]
    sys.stdout.flush()
    return status["code"]
