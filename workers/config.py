"""The one configuration file that describes a whole deployment.

Value objects only here; `load_config` parses and validates YAML into them, naming
the offending key in every error.
"""

from __future__ import annotations

import copy
import ipaddress
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs
import yaml

from homeserver.events.room_versions import DEFAULT_ROOM_VERSION, KNOWN_ROOM_VERSIONS
from homeserver.sync.tokens import STREAM_ORDER

MAIN_PROCESS = "main"

_WILDCARD_HOSTS = frozenset({"0.0.0.0", "::"})

# Worker types known to the code. "main" persists events; the others serve
# reads and forward writes to the writer of each stream.
WORKER_TYPES = ("main", "sync", "stream_writer", "client_reader")

# Streams, each with one writer process (main unless `stream_writers` names another).
# The sync token's field order is the one list of them.
STREAMS = STREAM_ORDER


class ConfigError(Exception):
    """A configuration problem: `key` is the dotted path of the offending key."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason


@attrs.frozen(slots=True)
class ListenAddress:
    host: str
    port: int

    def __str__(self) -> str:
        # IPv6 literals are bracketed so the result is a valid nginx/Prometheus address.
        if ":" in self.host:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"

    @property
    def is_wildcard(self) -> bool:
        return self.host in _WILDCARD_HOSTS

    def conflicts_with(self, other: ListenAddress) -> bool:
        """Whether binding both addresses at once would collide."""
        if self.port != other.port:
            return False
        return self.host == other.host or self.is_wildcard or other.is_wildcard


@attrs.frozen(slots=True)
class DatabaseConfig:
    engine: str  # "sqlite3" or "psycopg2"
    sqlite_path: str | None = None
    postgres_dsn: str | None = None
    cp_min: int = 1
    cp_max: int = 10


@attrs.frozen(slots=True)
class RedisConfig:
    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 6379
    dbid: int = 0
    password: str | None = None


@attrs.frozen(slots=True)
class LimitsConfig:
    # Largest JSON request body accepted by the client API, in bytes.
    max_json_body_size: int = 1_048_576
    # Longest /sync long-poll a client may ask for, in milliseconds.
    max_sync_timeout_ms: int = 300_000
    # How long a worker waits for its view to catch up after forwarding a write.
    replication_wait_timeout_ms: int = 30_000
    # Default and maximum number of events per /messages page.
    default_messages_limit: int = 10
    max_messages_limit: int = 1000
    # Default timeline events per room in /sync.
    default_sync_timeline_limit: int = 10
    # /relations and /threads page sizes, and how many levels `recurse=true` follows.
    default_relations_limit: int = 20
    max_relations_limit: int = 1000
    default_threads_limit: int = 20
    max_threads_limit: int = 100
    relations_recursion_depth: int = 3
    # Largest page of the published room directory (/publicRooms), also used when the
    # client gives no limit.
    max_public_rooms_limit: int = 500
    # Longest typing notification a client may ask for (longer ones are cut to this).
    max_typing_timeout_ms: int = 120_000
    # Most send-to-device messages delivered to one device per /sync response.
    max_to_device_per_sync: int = 100
    # Room state storage: deltas allowed between a state group and its full snapshot,
    # state entries the per-process read cache may hold, and events whose groups it keeps.
    state_group_max_delta_chain: int = 50
    state_cache_max_entries: int = 200_000
    state_event_cache_size: int = 50_000
    # /sync: how long a follower waits to reach a `since` its writer has announced, and
    # one beyond anything announced (the announcement may be in flight), in milliseconds.
    sync_catch_up_timeout_ms: int = 10_000
    sync_unknown_position_wait_ms: int = 2_000
    # Events examined per room to fill a filtered timeline before answering `limited`.
    sync_max_timeline_scan: int = 2_000
    # Users whose membership history, and rooms whose newest position, /sync caches.
    sync_membership_cache_users: int = 50_000
    sync_room_change_cache_rooms: int = 100_000


@attrs.frozen(slots=True)
class PresenceConfig:
    # Off: presence updates are accepted and dropped, /sync carries no presence.
    enabled: bool = True
    # An online user inactive this long reads as unavailable.
    idle_timeout_ms: int = 300_000
    # An online user active within this window reads as currently_active; /sync
    # activity refreshes last_active no more often than this.
    active_window_ms: int = 60_000
    # A present user with no /sync in flight and none (nor other presence-touching
    # request) seen for this long becomes offline.
    offline_timeout_ms: int = 30_000
    # How often the presence writer looks for idle and departed users.
    sweep_interval_ms: int = 10_000
    # Each process tells the presence writer who is syncing there in batches: a user's
    # last /sync ending is held this long (a following long-poll cancels it), and the
    # whole set is re-sent every half offline_timeout_ms so a lost notice heals.
    sync_notice_interval_ms: int = 1_000


@attrs.frozen(slots=True)
class ProcessConfig:
    """One process of the deployment: `main` or a named worker."""

    name: str
    type: str
    listen: ListenAddress | None = None
    metrics_listen: ListenAddress | None = None
    # The internal replication HTTP API (main, and any stream writer), protected by
    # the replication secret; never routed by the reverse proxy.
    replication_listen: ListenAddress | None = None


@attrs.frozen(slots=True)
class ProxyConfig:
    """The routing reverse proxy whose config `ganglion deploy nginx` generates."""

    listen: ListenAddress = ListenAddress("127.0.0.1", 8080)
    server_name: str = "_"


@attrs.frozen(slots=True)
class HomeserverConfig:
    server_name: str
    data_dir: str
    signing_key_path: str
    database: DatabaseConfig
    main: ProcessConfig
    workers: tuple[ProcessConfig, ...] = ()
    public_baseurl: str | None = None
    log_level: str = "INFO"
    log_format: str = "json"  # "json" or "text"
    redis: RedisConfig = RedisConfig()
    enable_registration: bool = False
    allow_guest_access: bool = False
    bcrypt_rounds: int = 12
    registration_shared_secret: str | None = None
    replication_secret: str | None = None
    well_known_client_base_url: str | None = None
    # stream name -> process name of its single writer.
    stream_writers: Mapping[str, str] = attrs.field(factory=lambda: {"events": MAIN_PROCESS})
    limits: LimitsConfig = LimitsConfig()
    proxy: ProxyConfig = ProxyConfig()
    cors_allowed_origins: tuple[str, ...] = ("*",)
    presence: PresenceConfig = PresenceConfig()
    # The room version of rooms created without an explicit `room_version`.
    default_room_version: str = DEFAULT_ROOM_VERSION
    raw: Mapping[str, Any] = attrs.field(factory=dict, eq=False, repr=False)

    @property
    def processes(self) -> tuple[ProcessConfig, ...]:
        return (self.main, *self.workers)

    @property
    def is_multi_process(self) -> bool:
        return bool(self.workers)

    def process(self, name: str) -> ProcessConfig:
        for p in self.processes:
            if p.name == name:
                return p
        raise ConfigError("workers", f"no process named {name!r} is configured")

    def writer_of(self, stream: str) -> ProcessConfig:
        return self.process(self.stream_writers.get(stream, MAIN_PROCESS))


# ---------------------------------------------------------------------------
# Loading and validation
# ---------------------------------------------------------------------------

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_FORMATS = ("json", "text")
DATABASE_ENGINES = ("sqlite3", "psycopg2")

_TOP_LEVEL_KEYS = frozenset(
    {
        "server_name",
        "data_dir",
        "signing_key_path",
        "public_baseurl",
        "log_level",
        "log_format",
        "database",
        "redis",
        "enable_registration",
        "allow_guest_access",
        "bcrypt_rounds",
        "registration_shared_secret",
        "replication_secret",
        "well_known_client",
        "cors_allowed_origins",
        "limits",
        "main",
        "workers",
        "stream_writers",
        "proxy",
        "default_room_version",
        "presence",
    }
)

_WORKER_NAME_RE = re.compile(r"^[a-z0-9_-]+$")
_HOSTNAME_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?$")
_SERVER_NAME_RE = re.compile(r"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(?::[0-9]{1,5})?$")
# libpq keyword/value parameters accepted instead of a `dsn` string.
_PG_KEYWORDS = ("host", "port", "user", "password", "dbname")


class _DuplicateKeyError(Exception):
    pass


class _StrictLoader(yaml.SafeLoader):
    """A SafeLoader that rejects duplicate mapping keys instead of keeping the last."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
            except TypeError:
                continue
            if duplicate:
                line = key_node.start_mark.line + 1
                raise _DuplicateKeyError(f"duplicate key {key!r} at line {line}")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_config(path: str) -> HomeserverConfig:
    """Read, parse and validate the YAML config file at `path`.

    Relative paths inside the file resolve against the file's own directory.
    Every problem raises ConfigError naming the offending key.
    """
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError(path, f"cannot read config file: {e.strerror or e}") from None
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass
    except _DuplicateKeyError as e:
        raise ConfigError(path, str(e)) from None
    except yaml.YAMLError as e:
        where = ""
        mark = getattr(e, "problem_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError(path, f"invalid YAML{where}: {problem}") from None
    if data is None:
        raise ConfigError(path, "the config file is empty")
    if not isinstance(data, Mapping):
        raise ConfigError(path, f"expected a mapping at the top level, got {_type_name(data)}")
    return parse_config(data, base_dir=os.path.dirname(os.path.abspath(path)))


def parse_config(data: Mapping[str, Any], *, base_dir: str) -> HomeserverConfig:
    """Validate an already-parsed config mapping; relative paths resolve against `base_dir`."""
    if not isinstance(data, Mapping):
        raise ConfigError("(root)", f"expected a mapping, got {_type_name(data)}")
    _reject_unknown(data, _TOP_LEVEL_KEYS, "")

    server_name = _req_str(data, "server_name", "server_name")
    if not _SERVER_NAME_RE.match(server_name):
        raise ConfigError(
            "server_name", f"expected a host name with an optional :PORT, got {server_name!r}"
        )
    data_dir = _resolve(base_dir, _req_str(data, "data_dir", "data_dir"))
    signing_key_path = _resolve(
        base_dir,
        _opt_str(data, "signing_key_path", "signing_key_path")
        or os.path.join(data_dir, f"{server_name.replace(':', '_')}.signing.key"),
    )

    public_baseurl = _opt_str(data, "public_baseurl", "public_baseurl")
    if public_baseurl is not None:
        _check_url(public_baseurl, "public_baseurl")
        if not public_baseurl.endswith("/"):
            public_baseurl += "/"

    log_level = (_opt_str(data, "log_level", "log_level") or "INFO").upper()
    if log_level not in LOG_LEVELS:
        raise ConfigError(
            "log_level", f"expected one of {', '.join(LOG_LEVELS)}, got {log_level!r}"
        )
    log_format = _opt_str(data, "log_format", "log_format") or "json"
    if log_format not in LOG_FORMATS:
        raise ConfigError(
            "log_format", f"expected one of {', '.join(LOG_FORMATS)}, got {log_format!r}"
        )

    database = _parse_database(data.get("database"), base_dir=base_dir, data_dir=data_dir)
    redis = _parse_redis(data.get("redis"))
    enable_registration = _opt_bool(data, "enable_registration", "enable_registration", False)
    allow_guest_access = _opt_bool(data, "allow_guest_access", "allow_guest_access", False)
    # bcrypt's cost factor (4..31); 12 is a sane default for production.
    bcrypt_rounds = _opt_int(data, "bcrypt_rounds", "bcrypt_rounds", 12, minimum=4, maximum=31)
    registration_shared_secret = _opt_secret(
        data, "registration_shared_secret", "registration_shared_secret"
    )
    replication_secret = _opt_secret(data, "replication_secret", "replication_secret")
    well_known_client_base_url = _parse_well_known(data.get("well_known_client"))
    cors = _parse_str_list(data.get("cors_allowed_origins", ["*"]), "cors_allowed_origins")
    limits = _parse_limits(data.get("limits"))

    main = _parse_main(data.get("main"))
    workers = _parse_workers(data.get("workers"))
    processes = (main, *workers)
    stream_writers = _parse_stream_writers(data.get("stream_writers"), processes)
    proxy = _parse_proxy(data.get("proxy"))
    presence = _parse_presence(data.get("presence"))
    default_room_version = _parse_room_version(data.get("default_room_version"))

    _check_listen_conflicts(processes, proxy if data.get("proxy") is not None else None)

    if workers:
        names = ", ".join(w.name for w in workers)
        if database.engine != "psycopg2":
            raise ConfigError(
                "database.name",
                f"SQLite serves a single process only; several processes (main, {names}) "
                "must share PostgreSQL: set database.name: psycopg2",
            )
        if not redis.enabled:
            raise ConfigError(
                "redis.enabled",
                f"workers ({names}) talk to main over Redis: set redis.enabled: true",
            )
        if not replication_secret:
            raise ConfigError(
                "replication_secret", f"required when workers are configured ({names})"
            )
        if main.replication_listen is None:
            raise ConfigError(
                "main.replication_listen",
                f"required when workers are configured ({names}): workers forward writes there",
            )

    return HomeserverConfig(
        server_name=server_name,
        data_dir=data_dir,
        signing_key_path=signing_key_path,
        database=database,
        main=main,
        workers=workers,
        public_baseurl=public_baseurl,
        log_level=log_level,
        log_format=log_format,
        redis=redis,
        enable_registration=enable_registration,
        allow_guest_access=allow_guest_access,
        bcrypt_rounds=bcrypt_rounds,
        registration_shared_secret=registration_shared_secret,
        replication_secret=replication_secret,
        well_known_client_base_url=well_known_client_base_url,
        stream_writers=stream_writers,
        limits=limits,
        proxy=proxy,
        cors_allowed_origins=cors,
        presence=presence,
        default_room_version=default_room_version,
        raw=copy.deepcopy(dict(data)),
    )


def parse_listen_address(value: object, key: str) -> ListenAddress:
    """Parse "HOST:PORT" (IPv6 as "[::1]:PORT") into a ListenAddress."""
    if not isinstance(value, str):
        raise ConfigError(key, f"expected HOST:PORT, got {value!r}")
    text = value.strip()
    if text.startswith("["):
        end = text.find("]")
        if end == -1 or text[end + 1 : end + 2] != ":":
            raise ConfigError(key, f"expected HOST:PORT, got {value!r}")
        host, port_text = text[1:end], text[end + 2 :]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ConfigError(key, f"invalid IPv6 address {host!r} in {value!r}") from None
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or not host:
            raise ConfigError(key, f"expected HOST:PORT, got {value!r}")
        if ":" in host:
            raise ConfigError(key, f"IPv6 addresses must be bracketed, as [{host}]:PORT")
        if not _HOSTNAME_RE.match(host):
            raise ConfigError(key, f"invalid host {host!r} in {value!r}")
    if not port_text.isdigit():
        raise ConfigError(key, f"expected HOST:PORT with a numeric port, got {value!r}")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise ConfigError(key, f"port must be between 1 and 65535, got {port}")
    return ListenAddress(host, port)


# -- sections ---------------------------------------------------------------


def _parse_database(raw: object, *, base_dir: str, data_dir: str) -> DatabaseConfig:
    if raw is None:
        return DatabaseConfig(engine="sqlite3", sqlite_path=os.path.join(data_dir, "homeserver.db"))
    section = _mapping(raw, "database")
    _reject_unknown(section, {"name", "args"}, "database")
    engine = _req_str(section, "name", "database.name")
    if engine not in DATABASE_ENGINES:
        raise ConfigError(
            "database.name", f"expected one of {', '.join(DATABASE_ENGINES)}, got {engine!r}"
        )
    args = _mapping(section.get("args") or {}, "database.args")
    cp_min = _opt_int(args, "cp_min", "database.args.cp_min", 1, minimum=1)
    cp_max = _opt_int(args, "cp_max", "database.args.cp_max", max(10, cp_min), minimum=1)
    if cp_max < cp_min:
        raise ConfigError("database.args.cp_max", f"must be >= cp_min ({cp_min}), got {cp_max}")

    if engine == "sqlite3":
        _reject_unknown(args, {"database", "cp_min", "cp_max"}, "database.args")
        path = _opt_str(args, "database", "database.args.database")
        if path is None:
            path = os.path.join(data_dir, "homeserver.db")
        elif path != ":memory:":
            path = _resolve(base_dir, path)
        return DatabaseConfig(engine=engine, sqlite_path=path, cp_min=cp_min, cp_max=cp_max)

    allowed = {"dsn", "cp_min", "cp_max", "database", *_PG_KEYWORDS}
    _reject_unknown(args, allowed, "database.args")
    dsn = _opt_str(args, "dsn", "database.args.dsn")
    parts: list[str] = []
    for kw in (*_PG_KEYWORDS, "database"):
        if kw not in args or args[kw] is None:
            continue
        key = f"database.args.{kw}"
        if dsn is not None:
            raise ConfigError(key, "give either database.args.dsn or libpq keywords, not both")
        value = args[kw]
        if kw == "port":
            value = _opt_int(args, kw, key, 5432, minimum=1, maximum=65535)
        elif not isinstance(value, str):
            raise ConfigError(key, f"expected a string, got {_type_name(value)}")
        parts.append(f"{'dbname' if kw == 'database' else kw}={_libpq_quote(str(value))}")
    if dsn is None:
        if not parts:
            raise ConfigError(
                "database.args.dsn",
                'required for psycopg2 (e.g. "host=/run/postgresql dbname=ganglion")',
            )
        dsn = " ".join(parts)
    if not dsn.strip():
        raise ConfigError("database.args.dsn", "must not be empty")
    return DatabaseConfig(engine=engine, postgres_dsn=dsn, cp_min=cp_min, cp_max=cp_max)


def _parse_redis(raw: object) -> RedisConfig:
    if raw is None:
        return RedisConfig()
    section = _mapping(raw, "redis")
    _reject_unknown(section, {"enabled", "host", "port", "dbid", "password"}, "redis")
    host = _opt_str(section, "host", "redis.host") or "127.0.0.1"
    return RedisConfig(
        enabled=_opt_bool(section, "enabled", "redis.enabled", False),
        host=host,
        port=_opt_int(section, "port", "redis.port", 6379, minimum=1, maximum=65535),
        dbid=_opt_int(section, "dbid", "redis.dbid", 0, minimum=0),
        password=_opt_str(section, "password", "redis.password") or None,
    )


def _parse_well_known(raw: object) -> str | None:
    if raw is None:
        return None
    section = _mapping(raw, "well_known_client")
    _reject_unknown(section, {"base_url"}, "well_known_client")
    url = _opt_str(section, "base_url", "well_known_client.base_url")
    if url is not None:
        _check_url(url, "well_known_client.base_url")
    return url


def _parse_limits(raw: object) -> LimitsConfig:
    if raw is None:
        return LimitsConfig()
    section = _mapping(raw, "limits")
    fields = [f.name for f in attrs.fields(LimitsConfig)]
    _reject_unknown(section, set(fields), "limits")
    defaults = LimitsConfig()
    values = {
        name: _opt_int(section, name, f"limits.{name}", getattr(defaults, name), minimum=1)
        for name in fields
    }
    limits = LimitsConfig(**values)
    if limits.default_messages_limit > limits.max_messages_limit:
        raise ConfigError(
            "limits.default_messages_limit",
            f"must not exceed limits.max_messages_limit ({limits.max_messages_limit})",
        )
    return limits


def _parse_main(raw: object) -> ProcessConfig:
    section = _mapping(raw if raw is not None else {}, "main")
    _reject_unknown(section, {"listen", "metrics_listen", "replication_listen"}, "main")
    listen = parse_listen_address(section.get("listen", "127.0.0.1:8008"), "main.listen")
    return ProcessConfig(
        name=MAIN_PROCESS,
        type=MAIN_PROCESS,
        listen=listen,
        metrics_listen=_opt_listen(section, "metrics_listen", "main.metrics_listen"),
        replication_listen=_opt_listen(section, "replication_listen", "main.replication_listen"),
    )


def _parse_workers(raw: object) -> tuple[ProcessConfig, ...]:
    if raw is None:
        return ()
    section = _mapping(raw, "workers")
    workers: list[ProcessConfig] = []
    for name, spec in section.items():
        if not isinstance(name, str):
            raise ConfigError(f"workers.{name}", "worker names must be strings")
        key = f"workers.{name}"
        if name == MAIN_PROCESS:
            raise ConfigError(
                key, '"main" is reserved for the main process; configure it under main:'
            )
        if not _WORKER_NAME_RE.match(name):
            raise ConfigError(key, "worker names may only contain a-z, 0-9, '_' and '-'")
        body = _mapping(spec, key)
        _reject_unknown(body, {"type", "listen", "metrics_listen", "replication_listen"}, key)
        wtype = _req_str(body, "type", f"{key}.type")
        if wtype not in WORKER_TYPES or wtype == MAIN_PROCESS:
            known = ", ".join(t for t in WORKER_TYPES if t != MAIN_PROCESS)
            raise ConfigError(f"{key}.type", f"unknown worker type {wtype!r} (known: {known})")
        if "listen" not in body:
            raise ConfigError(f"{key}.listen", "required: the HTTP address this worker serves on")
        workers.append(
            ProcessConfig(
                name=name,
                type=wtype,
                listen=parse_listen_address(body["listen"], f"{key}.listen"),
                metrics_listen=_opt_listen(body, "metrics_listen", f"{key}.metrics_listen"),
                replication_listen=_opt_listen(
                    body, "replication_listen", f"{key}.replication_listen"
                ),
            )
        )
    return tuple(workers)


def _parse_stream_writers(raw: object, processes: Sequence[ProcessConfig]) -> dict[str, str]:
    writers = {stream: MAIN_PROCESS for stream in STREAMS}
    section = _mapping(raw if raw is not None else {}, "stream_writers")
    by_name = {p.name: p for p in processes}
    for stream, writer in section.items():
        key = f"stream_writers.{stream}"
        if stream not in STREAMS:
            raise ConfigError(key, f"unknown stream {stream!r} (known: {', '.join(STREAMS)})")
        if not isinstance(writer, str):
            raise ConfigError(key, f"expected a process name, got {_type_name(writer)}")
        if writer not in by_name:
            raise ConfigError(
                key,
                f"no process named {writer!r} is configured (have: {', '.join(by_name)})",
            )
        proc = by_name[writer]
        if proc.name != MAIN_PROCESS and proc.replication_listen is None:
            raise ConfigError(
                key,
                f"{writer!r} writes a stream, so it needs workers.{writer}.replication_listen "
                "to receive forwarded writes",
            )
        writers[stream] = writer
    for proc in processes:
        if proc.type == "stream_writer" and proc.name not in writers.values():
            raise ConfigError(
                f"workers.{proc.name}.type",
                "a stream_writer worker must write a stream:"
                f" name {proc.name!r} under stream_writers",
            )
    return writers


def _parse_proxy(raw: object) -> ProxyConfig:
    if raw is None:
        return ProxyConfig()
    section = _mapping(raw, "proxy")
    _reject_unknown(section, {"listen", "server_name"}, "proxy")
    listen = parse_listen_address(section.get("listen", "127.0.0.1:8080"), "proxy.listen")
    server_name = _opt_str(section, "server_name", "proxy.server_name") or "_"
    if any(c.isspace() or c in ";{}" for c in server_name):
        raise ConfigError("proxy.server_name", f"invalid nginx server_name {server_name!r}")
    return ProxyConfig(listen=listen, server_name=server_name)


def _parse_presence(raw: object) -> PresenceConfig:
    if raw is None:
        return PresenceConfig()
    section = _mapping(raw, "presence")
    _reject_unknown(
        section,
        {
            "enabled",
            "idle_timeout_ms",
            "active_window_ms",
            "offline_timeout_ms",
            "sweep_interval_ms",
            "sync_notice_interval_ms",
        },
        "presence",
    )
    defaults = PresenceConfig()
    return PresenceConfig(
        enabled=_opt_bool(section, "enabled", "presence.enabled", defaults.enabled),
        idle_timeout_ms=_opt_int(
            section,
            "idle_timeout_ms",
            "presence.idle_timeout_ms",
            defaults.idle_timeout_ms,
            minimum=1,
        ),
        active_window_ms=_opt_int(
            section,
            "active_window_ms",
            "presence.active_window_ms",
            defaults.active_window_ms,
            minimum=1,
        ),
        offline_timeout_ms=_opt_int(
            section,
            "offline_timeout_ms",
            "presence.offline_timeout_ms",
            defaults.offline_timeout_ms,
            minimum=1,
        ),
        sweep_interval_ms=_opt_int(
            section,
            "sweep_interval_ms",
            "presence.sweep_interval_ms",
            defaults.sweep_interval_ms,
            minimum=1,
        ),
        sync_notice_interval_ms=_opt_int(
            section,
            "sync_notice_interval_ms",
            "presence.sync_notice_interval_ms",
            defaults.sync_notice_interval_ms,
            minimum=1,
        ),
    )


def _parse_room_version(raw: object) -> str:
    if raw is None:
        return DEFAULT_ROOM_VERSION
    if not isinstance(raw, str) or raw not in KNOWN_ROOM_VERSIONS:
        known = ", ".join(KNOWN_ROOM_VERSIONS)
        raise ConfigError("default_room_version", f"expected one of {known}, got {raw!r}")
    return raw


def _check_listen_conflicts(processes: Sequence[ProcessConfig], proxy: ProxyConfig | None) -> None:
    seen: list[tuple[ListenAddress, str]] = []
    candidates: list[tuple[ListenAddress | None, str]] = []
    for p in processes:
        prefix = MAIN_PROCESS if p.name == MAIN_PROCESS else f"workers.{p.name}"
        candidates += [
            (p.listen, f"{prefix}.listen"),
            (p.metrics_listen, f"{prefix}.metrics_listen"),
            (p.replication_listen, f"{prefix}.replication_listen"),
        ]
    if proxy is not None:
        candidates.append((proxy.listen, "proxy.listen"))
    for addr, key in candidates:
        if addr is None:
            continue
        for other, other_key in seen:
            if addr.conflicts_with(other):
                raise ConfigError(key, f"address {addr} is already used by {other_key} ({other})")
        seen.append((addr, key))


# -- primitive readers ------------------------------------------------------


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


def _mapping(value: object, key: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(key, f"expected a mapping, got {_type_name(value)}")
    return value


def _reject_unknown(section: Mapping[str, Any], allowed: Iterable[str], prefix: str) -> None:
    allowed_set = set(allowed)
    for k in section:
        if k not in allowed_set:
            key = f"{prefix}.{k}" if prefix else str(k)
            raise ConfigError(key, f"unknown key (allowed here: {', '.join(sorted(allowed_set))})")


def _req_str(section: Mapping[str, Any], name: str, key: str) -> str:
    value = section.get(name)
    if value is None:
        raise ConfigError(key, "required")
    if not isinstance(value, str):
        raise ConfigError(key, f"expected a string, got {_type_name(value)}")
    if not value.strip():
        raise ConfigError(key, "must not be empty")
    return value


def _opt_str(section: Mapping[str, Any], name: str, key: str) -> str | None:
    value = section.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigError(key, f"expected a string, got {_type_name(value)}")
    return value


def _opt_secret(section: Mapping[str, Any], name: str, key: str) -> str | None:
    value = _opt_str(section, name, key)
    if value is not None and not value.strip():
        raise ConfigError(key, "must not be empty (leave it out or set it to null instead)")
    return value


def _opt_bool(section: Mapping[str, Any], name: str, key: str, default: bool) -> bool:
    value = section.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ConfigError(key, f"expected true or false, got {value!r}")
    return value


def _opt_int(
    section: Mapping[str, Any],
    name: str,
    key: str,
    default: int,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
) -> int:
    value = section.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(key, f"expected an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise ConfigError(key, f"must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ConfigError(key, f"must be <= {maximum}, got {value}")
    return value


def _opt_listen(section: Mapping[str, Any], name: str, key: str) -> ListenAddress | None:
    value = section.get(name)
    if value is None:
        return None
    return parse_listen_address(value, key)


def _parse_str_list(value: object, key: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise ConfigError(key, f"expected a list of strings, got {_type_name(value)}")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise ConfigError(f"{key}.{i}", f"expected a string, got {_type_name(item)}")
    return tuple(value)


def _check_url(url: str, key: str) -> None:
    if not (url.startswith("http://") or url.startswith("https://")) or len(url) <= len("https://"):
        raise ConfigError(key, f"expected an http:// or https:// URL, got {url!r}")


def _resolve(base_dir: str, path: str) -> str:
    path = os.path.expanduser(path)
    return os.path.normpath(os.path.join(base_dir, path))


def _libpq_quote(value: str) -> str:
    if value and not any(c.isspace() or c in "'\\" for c in value):
        return value
    escaped = value.replace("\\", "\\\\").replace("'", "\\'")
    return f"'{escaped}'"
