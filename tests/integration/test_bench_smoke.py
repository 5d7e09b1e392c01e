"""bench/sync_bench.py still works: every scenario at tiny sizes against a real Ganglion.

One `ganglion run` (SQLite, open registration); the tool runs as the CLI it is, set-up
plus one repetition of each scenario, and its JSON must carry a figure for each one and
responses of the expected shape (so a tool that silently measures errors or empty
answers fails here).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.harness.ganglion import REPO_ROOT, GanglionProcess, run_cli
from tests.harness.ports import free_port

BENCH = REPO_ROOT / "bench" / "sync_bench.py"
ROOMS = 2
RECEIVERS = 2


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    directory = tmp_path_factory.mktemp("bench")
    config_path = directory / "homeserver.yaml"
    port = free_port()
    run_cli(
        "generate-config",
        "--server-name", "localhost",
        "--data-dir", str(directory / "data"),
        "--listen", f"127.0.0.1:{port}",
        "--open-registration",
        "-o", str(config_path),
    )  # fmt: skip
    config = yaml.safe_load(config_path.read_text())
    config["main"]["metrics_listen"] = f"127.0.0.1:{free_port()}"
    config["proxy"]["listen"] = f"127.0.0.1:{free_port()}"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    base_url = f"http://127.0.0.1:{port}"
    proc = GanglionProcess(
        ["run", "-c", config_path], "main", directory / "main.log", base_url + "/health"
    )
    proc.start()
    try:
        assert proc.pid is not None
        yield base_url, proc.pid
    finally:
        proc.stop()


def test_every_scenario_runs_once_at_tiny_sizes(server: tuple[str, int], tmp_path: Path) -> None:
    base_url, pid = server
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
