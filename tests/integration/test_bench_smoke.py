"""bench/sync_bench.py still works: every scenario at tiny sizes against a real Ganglion.

One `ganglion run` (the shared `single` fixture: SQLite, open registration); the tool
runs as the CLI it is, set-up plus one repetition of each scenario, and its JSON must carry
a figure for each one and responses of the expected shape (so a tool that silently
measures errors or empty answers fails here).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.harness.ganglion import REPO_ROOT
from tests.harness.single import SingleServer

BENCH = REPO_ROOT / "bench" / "sync_bench.py"
ROOMS = 2
RECEIVERS = 2


def test_every_scenario_runs_once_at_tiny_sizes(single: SingleServer, tmp_path: Path) -> None:
    base_url, pid = single.base_url, single.process.pid
    assert pid is not None
    out = tmp_path / "result.json"
    done = subprocess.run(
        [sys.executable, str(BENCH), "--base-url", base_url, "--pid", str(pid),
         "--json", str(out), "--rooms", str(ROOMS), "--events-per-room", "3",
         "--members-per-room", "3", "--talkers-per-room", "2", "--timeline-limit", "2",
         "--repetitions", "1", "--changed-rooms", "1", "--receivers", str(RECEIVERS),
         "--sends", "1", "--settle-ms", "20", "--quiet"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    scenarios = result["scenarios"]

    initial = scenarios["initial"]
    assert initial["count"] == 1 and initial["median_ms"] > 0
    assert initial["response"]["joined_rooms"] == ROOMS
    # The filter's timeline limit is honoured: 2 events per room at most.
    assert 0 < initial["response"]["timeline_events"] <= 2 * ROOMS

    change = scenarios["incremental_change"]
    assert change["count"] == 1 and change["median_ms"] > 0
    assert change["response_last"]["joined_rooms"] == 1
    assert change["response_last"]["timeline_events"] == 1
    empty = scenarios["incremental_empty"]
    assert empty["count"] == 1 and empty["response_last"]["timeline_events"] == 0

    latency = scenarios["latency"]
    assert latency["missed_deliveries"] == 0
    assert latency["last_receiver"]["count"] == 1
    assert latency["all_receivers"]["count"] == RECEIVERS
    assert latency["last_receiver"]["max_ms"] >= latency["all_receivers"]["min_ms"] > 0

    assert result["rate_limited_responses"] == 0
    assert result["memory"]["VmRSS_kB"] > 0
