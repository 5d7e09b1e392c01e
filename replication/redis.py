"""The Redis side of replication: publish stream positions, subscribe to everyone's.

Uses txredisapi from the reactor. The subscriber reports connects and disconnects so
that the follower can switch between push (Redis) and catch-up polling (HTTP + DB).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import txredisapi
from prometheus_client import Gauge
from twisted.internet import defer
from twisted.internet.endpoints import HostnameEndpoint

from replication import wire
from workers.config import RedisConfig

logger = logging.getLogger(__name__)

REDIS_CONNECTED = Gauge(
    "ganglion_replication_redis_connected",
    "1 while the replication subscriber is connected to Redis",
)


class _Subscriber(txredisapi.SubscriberProtocol):  # type: ignore[misc]
    link: RedisReplicationLink

    @defer.inlineCallbacks
    def connectionMade(self) -> Any:
        yield super().connectionMade()
        if not self.connected:
            return
        try:
            yield self.subscribe(wire.CHANNEL)
        except Exception:
            logger.warning("redis subscribe failed", exc_info=True)
            self.transport.loseConnection()
            return
        self.link._subscriber_up(self)

    def connectionLost(self, why: Any) -> None:
        self.link._subscriber_down()
        super().connectionLost(why)

    def messageReceived(self, pattern: Any, channel: Any, message: Any) -> None:
        try:
            msg = wire.decode(message)
        except wire.WireError as e:
            logger.warning("dropping bad replication message", extra={"reason": str(e)})
            return
        self.link.on_position(msg)


class RedisReplicationLink:
    def __init__(
        self,
        config: RedisConfig,
        reactor: Any,
        on_position: Callable[[wire.PositionMessage], None],
        on_connected: Callable[[], None],
        on_disconnected: Callable[[], None],
    ) -> None:
        self.config = config
        self.reactor = reactor
        self.on_position = on_position
        self._on_connected = on_connected
        self._on_disconnected = on_disconnected
        self.connected = False
        self._publisher: Any = None
        self._sub_factory: Any = None

    def start(self) -> None:
        c = self.config
        # Publishing connection: lazy, reconnecting; publishes while down are dropped
        # (the followers poll positions over HTTP until Redis is back).
        self._publisher = txredisapi.lazyConnection(
            host=c.host,
            port=c.port,
            dbid=c.dbid,
            password=c.password,
            reconnect=True,
            connectTimeout=5,
            replyTimeout=5,
        )
        self._publisher._factory.maxDelay = 2  # noqa: SLF001  # reconnect quickly after an outage
        factory = txredisapi.SubscriberFactory(isLazy=True)
        factory.maxDelay = 2
        factory.password = c.password

        link = self

        class Subscriber(_Subscriber):
            pass

        Subscriber.link = link
        factory.protocol = Subscriber
        factory.reconnect = True
        factory.startConnecting(HostnameEndpoint(self.reactor, c.host, c.port, timeout=5))
        self._sub_factory = factory

    def _subscriber_up(self, proto: Any) -> None:
        logger.info("replication subscriber connected to redis")
        self.connected = True
        REDIS_CONNECTED.set(1)
        self._on_connected()

    def _subscriber_down(self) -> None:
        if self.connected:
            logger.warning("replication subscriber lost redis; catching up by polling")
        self.connected = False
        REDIS_CONNECTED.set(0)
        self._on_disconnected()

    def publish(self, msg: wire.PositionMessage) -> None:
        if self._publisher is None:
            return
        d = self._publisher.publish(wire.CHANNEL, wire.encode(msg).decode("ascii"))
        d.addErrback(lambda f: logger.debug("publish failed: %s", f.getErrorMessage()))

    async def stop(self) -> None:
        if self._sub_factory is not None:
            await self._sub_factory.disconnect()
        if self._publisher is not None:
            await self._publisher.disconnect()
