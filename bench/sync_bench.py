#!/usr/bin/env python3
"""Load tool for /sync that speaks only the Matrix client-server API.

It runs against any homeserver with open registration (m.login.dummy), so the same
figures can be taken from Ganglion and from other servers on the same machine:

    python bench/sync_bench.py --base-url http://127.0.0.1:8008 --json out.json [--pid PID]

Scenarios (``--scenario``, repeatable; default all three):

* ``initial``: one user in ``--rooms`` rooms of ``--members-per-room`` members, each room
  with ``--events-per-room`` messages sent by a few of its members; the initial /sync with
  a filter (timeline limit ``--timeline-limit``, ``lazy_load_members``) is timed
  ``--repetitions`` times after one untimed warm-up request (reported apart as "first").
* ``incremental``: the same user; ``incremental_change`` times /sync since the previous
  ``next_batch`` after another member sent one message into each of ``--changed-rooms``
  rooms; ``incremental_empty`` times /sync since the latest ``next_batch`` with nothing
  new, both with ``timeout=0``.
* ``latency``: ``--receivers`` users joined to one room each long-poll /sync; a sender
  sends ``--sends`` messages, one at a time, each once every receiver has had a request
  outstanding for ``--settle-ms``; the latency of a receiver is send start -> the end of
  the /sync response that carries the message.

Every /sync request differs from the one before it by trailing whitespace in its inline
filter, so a server cannot answer a repetition from a cache of whole responses (the filter
means the same). Times are wall-clock from the request start to the last byte of the body.
p90 is the nearest-rank percentile. With ``--pid``, the server's VmRSS and VmHWM are read
from /proc after the scenarios. With ``--profile-pid`` and ``--profile-dir``, py-spy
records that process during each timed phase (not during set-up).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import attrs

CLIENT = "/_matrix/client/v3"
SCENARIOS = ("initial", "incremental", "latency")
PASSWORD = "bench-password-not-secret"
LATENCY_PREFIX = "bench-latency"


class BenchError(Exception):
    """The server answered something the benchmark cannot go on from."""


# ------------------------------------------------------------------ figures --


def summarise(samples_ms: Sequence[float]) -> dict[str, float | int]:
    """median, p90 (nearest rank), min, max and count of a list of milliseconds."""
    if not samples_ms:
        return {"count": 0}
    ordered = sorted(samples_ms)
    p90 = ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)]
    return {
        "count": len(ordered),
        "median_ms": round(statistics.median(ordered), 2),
        "p90_ms": round(p90, 2),
        "min_ms": round(ordered[0], 2),
        "max_ms": round(ordered[-1], 2),
    }


def server_cpu_ns(pid: int | None) -> int | None:
    """CPU time the server has used so far, in ns, summed over all its threads.

    From /proc/PID/task/*/schedstat (exact, unlike the 10 ms ticks of /proc/PID/stat), so
    the CPU a request costs the server can be told apart from time spent waiting for a
    CPU on a busy machine.
    """
    if pid is None:
        return None
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue  # the thread ended meanwhile
    return total


def load_average() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def read_memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of a process in kB, from /proc/PID/status."""
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[f"{key}_kB"] = int(value.split()[0])
    return out


# ------------------------------------------------------------------- client --


@attrs.frozen(slots=True)
class Account:
    user_id: str
    access_token: str


@attrs.frozen(slots=True)
class Timed:
    """A response and how long it took, in ms, from request start to last body byte."""

    status: int
    body: Any
    elapsed_ms: float
    size: int
    finished_at: float  # time.perf_counter() at the last byte


class Api:
    """Client-server API calls over one aiohttp session; retries 429 as the server asks."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str) -> None:
        self.session = session
        self.base_url = base_url.rstrip("/")
        self.rate_limited = 0
        self._txn = 0

    def txn_id(self) -> str:
        self._txn += 1
        return f"b{self._txn}.{secrets.token_hex(4)}"

    async def call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: dict[str, str] | None = None,
        token: str | None = None,
        expect: tuple[int, ...] = (200,),
    ) -> Timed:
        url = self.base_url + (path if path.startswith("/_matrix") else CLIENT + path)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        while True:
            started = time.perf_counter()
            async with self.session.request(
                method, url, json=body, params=params, headers=headers
            ) as resp:
                raw = await resp.read()
                finished = time.perf_counter()
                status = resp.status
            try:
                decoded = json.loads(raw) if raw else None
            except ValueError:
                decoded = raw.decode("utf-8", "replace")
            if status == 429:
                self.rate_limited += 1
                wait_ms = decoded.get("retry_after_ms", 100) if isinstance(decoded, dict) else 100
                await asyncio.sleep(min(float(wait_ms), 5000.0) / 1000.0)
                continue
            if status not in expect:
                raise BenchError(f"{method} {path} -> {status}: {str(decoded)[:500]}")
            return Timed(status, decoded, (finished - started) * 1000.0, len(raw), finished)

    async def register(self, username: str) -> Account:
        """Register through user-interactive auth with the m.login.dummy stage."""
        body: dict[str, Any] = {"username": username, "password": PASSWORD}
        first = await self.call("POST", "/register", body=body, expect=(200, 401))
        if first.status == 401:
            session = first.body.get("session") if isinstance(first.body, dict) else None
            auth: dict[str, Any] = {"type": "m.login.dummy"}
            if session is not None:
                auth["session"] = session
            first = await self.call("POST", "/register", body={**body, "auth": auth})
        return Account(first.body["user_id"], first.body["access_token"])

    async def create_room(self, owner: Account, name: str) -> str:
        created = await self.call(
            "POST",
            "/createRoom",
            body={"preset": "public_chat", "name": name},
            token=owner.access_token,
        )
        return str(created.body["room_id"])

    async def join(self, account: Account, room_id: str) -> None:
        await self.call(
            "POST", f"/join/{urllib.parse.quote(room_id)}", body={}, token=account.access_token
        )

    async def send_text(self, account: Account, room_id: str, text: str) -> Timed:
        path = (
            f"/rooms/{urllib.parse.quote(room_id)}/send/m.room.message/"
            f"{urllib.parse.quote(self.txn_id())}"
        )
        return await self.call(
            "PUT", path, body={"msgtype": "m.text", "body": text}, token=account.access_token
        )


class SyncFilter:
    """An inline filter that spells itself differently on every use (see module doc)."""

    def __init__(self, timeline_limit: int, lazy_load_members: bool = True) -> None:
        self.text = json.dumps(
            {
                "room": {
                    "timeline": {"limit": timeline_limit},
                    "state": {"lazy_load_members": lazy_load_members},
                }
            },
            separators=(",", ":"),
        )
        self._uses = 0

    def next(self) -> str:
        self._uses += 1
        return self.text + " " * (self._uses % 64)


@attrs.define
class CpuSamples:
    """Server CPU per request: read before and after each one, by `--pid`."""

    pid: int | None
    samples_ms: list[float] = attrs.Factory(list)
    _start: int | None = None

    def start(self) -> None:
        self._start = server_cpu_ns(self.pid)

    def stop(self) -> None:
        end = server_cpu_ns(self.pid)
        if self._start is not None and end is not None:
            self.samples_ms.append((end - self._start) / 1e6)

    def figures(self) -> dict[str, float | int]:
        if not self.samples_ms:
            return {}
        summary = summarise(self.samples_ms)
        return {
            "server_cpu_median_ms": summary["median_ms"],
            "server_cpu_min_ms": summary["min_ms"],
        }


async def sync(
    api: Api,
    account: Account,
    sync_filter: SyncFilter,
    *,
    since: str | None = None,
    timeout_ms: int = 0,
    set_presence: str | None = None,
) -> Timed:
    params = {"filter": sync_filter.next(), "timeout": str(timeout_ms)}
    if since is not None:
        params["since"] = since
    if set_presence is not None:
        params["set_presence"] = set_presence
    return await api.call("GET", "/sync", params=params, token=account.access_token)


def describe_sync(body: Any) -> dict[str, int]:
    """Counts that show what a server put in a /sync response (to compare like with like)."""
    joined = body.get("rooms", {}).get("join", {}) if isinstance(body, dict) else {}
    timeline = state = members = 0
    for room in joined.values():
        events = room.get("timeline", {}).get("events", [])
        timeline += len(events)
        # Servers may put state in "state" or, with use_state_after, "state_after".
        state_events = room.get("state", {}).get("events", []) + room.get("state_after", {}).get(
            "events", []
        )
        state += len(state_events)
        members += sum(1 for e in state_events if e.get("type") == "m.room.member")
        members += sum(1 for e in events if e.get("type") == "m.room.member")
    return {
        "joined_rooms": len(joined),
        "timeline_events": timeline,
        "state_events": state,
        "member_events": members,
    }


# ----------------------------------------------------------------- profiling --


@attrs.define
class Profiler:
    """Around each timed phase: the load average, and `py-spy record` if asked to."""

    server_pid: int | None
    pid: int | None
    out_dir: Path | None
    py_spy: str | None = None
    rate: int = 250

    @contextmanager
    def phase(self, name: str) -> Iterator[dict[str, float]]:
        facts: dict[str, float] = {"loadavg_1m_before": load_average()}
        try:
            with self._py_spy(name):
                yield facts
        finally:
            facts["loadavg_1m_after"] = load_average()

    @contextmanager
    def _py_spy(self, name: str) -> Iterator[None]:
        if self.pid is None or self.out_dir is None:
            yield
            return
        py_spy = (
            self.py_spy or shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        )
        self.out_dir.mkdir(parents=True, exist_ok=True)
        out = self.out_dir / f"{name}.txt"
        proc = subprocess.Popen(
            [py_spy, "record", "--pid", str(self.pid), "--format", "raw", "--rate",
             str(self.rate), "--output", str(out), "--nonblocking"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        time.sleep(1.0)  # py-spy needs a moment to attach before the phase starts
        try:
            yield
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                _, err = proc.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                _, err = proc.communicate()
            if not out.exists():
                print(f"py-spy wrote no profile for {name}: {err.decode()[-500:]}", file=sys.stderr)


# ---------------------------------------------------------------- scenarios --


@attrs.frozen(slots=True)
class Params:
    rooms: int
    events_per_room: int
    members_per_room: int
    talkers_per_room: int
    timeline_limit: int
    repetitions: int
    changed_rooms: int
    receivers: int
    sends: int
    settle_ms: int
    setup_concurrency: int
    latency_set_presence: str | None


@attrs.define
class RoomsSetup:
    alice: Account
    others: list[Account]
    room_ids: list[str]
    seconds: float


async def _gather_limited(limit: int, coros: Sequence[Any]) -> list[Any]:
    gate = asyncio.Semaphore(limit)

    async def run(coro: Any) -> Any:
        async with gate:
            return await coro

    return list(await asyncio.gather(*(run(c) for c in coros)))


async def setup_rooms(api: Api, p: Params, prefix: str) -> RoomsSetup:
    """alice and members_per_room - 1 others in `rooms` rooms; a few members talk."""
    started = time.perf_counter()
    users = await _gather_limited(
        p.setup_concurrency,
        [api.register(f"{prefix}_u{i}") for i in range(p.members_per_room)],
    )
    alice, others = users[0], users[1:]
    # One at a time: a server deriving room IDs from the create event (room version 12)
    # may give two rooms created by one user in the same millisecond the same ID.
    room_ids = [await api.create_room(alice, f"bench room {i}") for i in range(p.rooms)]
    await _gather_limited(p.setup_concurrency, [api.join(u, r) for r in room_ids for u in others])
    # Messages come from the first talkers_per_room members (alice included), so the
    # timeline of a lazy-loading sync names only a few of the room's members.
    talkers = users[: max(1, min(p.talkers_per_room, len(users)))]

    async def fill(room_index: int, room_id: str) -> None:
        for n in range(p.events_per_room):
            sender = talkers[(n + room_index) % len(talkers)]
            await api.send_text(sender, room_id, f"message {n} in room {room_index}")

    await _gather_limited(p.setup_concurrency, [fill(i, r) for i, r in enumerate(room_ids)])
    return RoomsSetup(alice, others, room_ids, time.perf_counter() - started)


async def run_initial(api: Api, p: Params, setup: RoomsSetup, profiler: Profiler) -> dict[str, Any]:
    sync_filter = SyncFilter(p.timeline_limit)
    first = await sync(api, setup.alice, sync_filter)
    samples: list[float] = []
    cpu = CpuSamples(profiler.server_pid)
    with profiler.phase("initial") as phase:
        for _ in range(p.repetitions):
            cpu.start()
            samples.append((await sync(api, setup.alice, sync_filter)).elapsed_ms)
            cpu.stop()
    return {
        **summarise(samples),
        **cpu.figures(),
        **phase,
        "samples_ms": [round(s, 2) for s in samples],
        "first_ms": round(first.elapsed_ms, 2),
        "response_bytes": first.size,
        "response": describe_sync(first.body),
    }


async def run_incremental(
    api: Api, p: Params, setup: RoomsSetup, profiler: Profiler
) -> dict[str, Any]:
    sync_filter = SyncFilter(p.timeline_limit)
    since = (await sync(api, setup.alice, sync_filter)).body["next_batch"]
    writer = setup.others[0] if setup.others else setup.alice
    changed = max(1, min(p.changed_rooms, len(setup.room_ids)))
    change_samples: list[float] = []
    change_shapes: list[dict[str, int]] = []
    change_cpu = CpuSamples(profiler.server_pid)
    with profiler.phase("incremental_change") as change_phase:
        for rep in range(p.repetitions):
            for k in range(changed):
                room_id = setup.room_ids[(rep * changed + k) % len(setup.room_ids)]
                await api.send_text(writer, room_id, f"change {rep}.{k}")
            change_cpu.start()
            timed = await sync(api, setup.alice, sync_filter, since=since)
            change_cpu.stop()
            change_samples.append(timed.elapsed_ms)
            change_shapes.append(describe_sync(timed.body))
            since = timed.body["next_batch"]
    empty_samples: list[float] = []
    empty_shapes: list[dict[str, int]] = []
    empty_cpu = CpuSamples(profiler.server_pid)
    with profiler.phase("incremental_empty") as empty_phase:
        for _ in range(p.repetitions):
            empty_cpu.start()
            timed = await sync(api, setup.alice, sync_filter, since=since)
            empty_cpu.stop()
            empty_samples.append(timed.elapsed_ms)
            empty_shapes.append(describe_sync(timed.body))
            since = timed.body["next_batch"]
    return {
        "change": {
            **summarise(change_samples),
            **change_cpu.figures(),
            **change_phase,
            "samples_ms": [round(s, 2) for s in change_samples],
            "changed_rooms": changed,
            "response_last": change_shapes[-1] if change_shapes else {},
        },
        "empty": {
            **summarise(empty_samples),
            **empty_cpu.figures(),
            **empty_phase,
            "samples_ms": [round(s, 2) for s in empty_samples],
            "response_last": empty_shapes[-1] if empty_shapes else {},
        },
    }


@attrs.define
class Receiver:
    account: Account
    since: str
    in_flight_since: float | None = None
    seen: dict[int, float] = attrs.Factory(dict)
    polls: int = 0


async def _receive(
    api: Api, receiver: Receiver, room_id: str, run_tag: str, sync_filter: SyncFilter, p: Params
) -> None:
    marker = f"{LATENCY_PREFIX} {run_tag} "
    while True:
        receiver.in_flight_since = time.perf_counter()
        timed = await sync(
            api,
            receiver.account,
            sync_filter,
            since=receiver.since,
            timeout_ms=30_000,
            set_presence=p.latency_set_presence,
        )
        receiver.in_flight_since = None
        receiver.polls += 1
        receiver.since = timed.body["next_batch"]
        room = timed.body.get("rooms", {}).get("join", {}).get(room_id, {})
        for event in room.get("timeline", {}).get("events", []):
            text = event.get("content", {}).get("body")
            if isinstance(text, str) and text.startswith(marker):
                receiver.seen.setdefault(int(text[len(marker) :]), timed.finished_at)


async def run_latency(api: Api, p: Params, prefix: str, profiler: Profiler) -> dict[str, Any]:
    started = time.perf_counter()
    sender = await api.register(f"{prefix}_sender")
    accounts = await _gather_limited(
        p.setup_concurrency, [api.register(f"{prefix}_r{i}") for i in range(p.receivers)]
    )
    room_id = await api.create_room(sender, "bench latency")
    await _gather_limited(p.setup_concurrency, [api.join(a, room_id) for a in accounts])
    sync_filter = SyncFilter(50)
    firsts = await _gather_limited(
        p.setup_concurrency,
        [sync(api, a, sync_filter, set_presence=p.latency_set_presence) for a in accounts],
    )
    receivers = [Receiver(a, f.body["next_batch"]) for a, f in zip(accounts, firsts, strict=True)]
    setup_seconds = time.perf_counter() - started
    run_tag = secrets.token_hex(4)
    tasks = [
        asyncio.create_task(_receive(api, r, room_id, run_tag, sync_filter, p)) for r in receivers
    ]
    settle = p.settle_ms / 1000.0
    last_ms: list[float] = []
    all_ms: list[float] = []
    send_ms: list[float] = []
    missed = 0
    cpu = CpuSamples(profiler.server_pid)

    async def until(condition: Any, deadline_s: float, what: str) -> bool:
        deadline = time.perf_counter() + deadline_s
        while not condition():
            for t in tasks:
                if t.done():
                    t.result()  # a receiver failed: raise its error
                    raise BenchError("a receiver stopped")
            if time.perf_counter() > deadline:
                print(f"latency: timed out waiting for {what}", file=sys.stderr)
                return False
            await asyncio.sleep(0.002)
        return True

    def all_polling() -> bool:
        now = time.perf_counter()
        return all(
            r.in_flight_since is not None and now - r.in_flight_since >= settle for r in receivers
        )

    try:
        with profiler.phase("latency") as phase:
            for seq in range(p.sends):
                await until(all_polling, 30.0, "every receiver to be long-polling")
                cpu.start()
                t0 = time.perf_counter()
                sent = await api.send_text(sender, room_id, f"{LATENCY_PREFIX} {run_tag} {seq}")
                send_ms.append(sent.elapsed_ms)
                if not await until(
                    lambda s=seq: all(s in r.seen for r in receivers), 30.0, f"message {seq}"
                ):
                    missed += sum(1 for r in receivers if seq not in r.seen)
                cpu.stop()
                got = [(r.seen[seq] - t0) * 1000.0 for r in receivers if seq in r.seen]
                all_ms.extend(got)
                if len(got) == len(receivers):
                    last_ms.append(max(got))
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return {
        "receivers": p.receivers,
        "sends": p.sends,
        "last_receiver": summarise(last_ms),
        "all_receivers": summarise(all_ms),
        "send_request": summarise(send_ms),
        # Server CPU from a send's start until every receiver has it: the send plus the
        # wake-ups and incremental syncs of all receivers.
        "server_cpu_per_send": cpu.figures(),
        **phase,
        "missed_deliveries": missed,
        "polls": sum(r.polls for r in receivers),
        "setup_seconds": round(setup_seconds, 2),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    p = Params(
        rooms=args.rooms,
        events_per_room=args.events_per_room,
        members_per_room=args.members_per_room,
        talkers_per_room=args.talkers_per_room,
        timeline_limit=args.timeline_limit,
        repetitions=args.repetitions,
        changed_rooms=args.changed_rooms,
        receivers=args.receivers,
        sends=args.sends,
        settle_ms=args.settle_ms,
        setup_concurrency=args.setup_concurrency,
        latency_set_presence=args.latency_set_presence or None,
    )
    scenarios = args.scenario or list(SCENARIOS)
    prefix = args.user_prefix or f"bench{secrets.token_hex(3)}"
    profiler = Profiler(args.pid, args.profile_pid, args.profile_dir, args.py_spy)
    result: dict[str, Any] = {
        "base_url": args.base_url,
        "params": attrs.asdict(p),
        "scenarios": {},
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    timeout = aiohttp.ClientTimeout(total=args.request_timeout)
    connector = aiohttp.TCPConnector(limit=max(64, 2 * p.receivers + 8))
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        api = Api(session, args.base_url)
        await api.call("GET", "/_matrix/client/versions")
        if "initial" in scenarios or "incremental" in scenarios:
            setup = await setup_rooms(api, p, prefix)
            result["setup_rooms_seconds"] = round(setup.seconds, 2)
            if "initial" in scenarios:
                result["scenarios"]["initial"] = await run_initial(api, p, setup, profiler)
                _progress(args, "initial", result["scenarios"]["initial"])
            if "incremental" in scenarios:
                inc = await run_incremental(api, p, setup, profiler)
                result["scenarios"]["incremental_change"] = inc["change"]
                result["scenarios"]["incremental_empty"] = inc["empty"]
                _progress(args, "incremental_change", inc["change"])
                _progress(args, "incremental_empty", inc["empty"])
        if "latency" in scenarios:
            result["scenarios"]["latency"] = await run_latency(api, p, prefix, profiler)
            _progress(args, "latency", result["scenarios"]["latency"]["last_receiver"])
        result["rate_limited_responses"] = api.rate_limited
    if args.pid is not None:
        result["memory"] = read_memory(args.pid)
    return result


def _progress(args: argparse.Namespace, name: str, figures: dict[str, Any]) -> None:
    if not args.quiet:
        shown = {
            k: v for k, v in figures.items() if k in ("count", "median_ms", "p90_ms", "min_ms")
        }
        print(f"{args.base_url} {name}: {shown}", file=sys.stderr)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--base-url", required=True, help="homeserver client API base URL")
    ap.add_argument("--scenario", action="append", choices=SCENARIOS, help="default: all")
    ap.add_argument("--json", type=Path, help="write the results here as JSON")
    ap.add_argument("--pid", type=int, help="server process to read VmRSS/VmHWM of")
    ap.add_argument("--rooms", type=int, default=50)
    ap.add_argument("--events-per-room", type=int, default=100)
    ap.add_argument("--members-per-room", type=int, default=10)
    ap.add_argument("--talkers-per-room", type=int, default=3)
    ap.add_argument("--timeline-limit", type=int, default=10)
    ap.add_argument("--repetitions", type=int, default=20)
    ap.add_argument("--changed-rooms", type=int, default=3)
    ap.add_argument("--receivers", type=int, default=20)
    ap.add_argument("--sends", type=int, default=30)
    ap.add_argument("--settle-ms", type=int, default=100)
    ap.add_argument("--setup-concurrency", type=int, default=8)
    ap.add_argument(
        "--latency-set-presence",
        default="offline",
        help="set_presence of the long-polling receivers ('' for the server default)",
    )
    ap.add_argument("--request-timeout", type=float, default=120.0)
    ap.add_argument("--user-prefix", help="localpart prefix (default: random per run)")
    ap.add_argument("--profile-pid", type=int, help="py-spy this process during timed phases")
    ap.add_argument("--profile-dir", type=Path, help="where py-spy writes <phase>.txt")
    ap.add_argument("--py-spy", help="the py-spy executable (default: on PATH, or by python)")
    ap.add_argument("--quiet", action="store_true")
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    result = asyncio.run(run(args))
    text = json.dumps(result, indent=2)
    if args.json is not None:
        args.json.write_text(text + "\n")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
