#!/usr/bin/env python3
"""Run bench/sync_bench.py against Ganglion and Synapse on this machine, in one run.

    .venv/bin/python bench/compare_synapse.py --install-synapse [--markdown OUT.md]

Starts one Ganglion process (SQLite, config from `ganglion generate-config` in a temporary
directory) and one Synapse process (SQLite, config from Synapse's own --generate-config,
then edited: 127.0.0.1 on a free port, client API only, open registration without
verification, rate limits out of the way, log level WARNING), both side by side on free
ports. Then it runs every scenario against each server in turn (Ganglion first unless
--synapse-first), reads each server's memory afterwards, and prints a markdown table with
both figures and the ratio Ganglion / Synapse.

Synapse is never part of this repository: it lives in a throwaway virtualenv outside it
(--synapse-venv, default $GANGLION_BENCH_SYNAPSE_VENV or ../synapse-venv next to the repo),
created with `pip install matrix-synapse` (plus py-spy) when --install-synapse is given.
Arguments after `--` go to sync_bench.py for both servers (e.g. `-- --repetitions 5`).
With --profile, the Ganglion run is also recorded with py-spy, one file per timed phase.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench" / "sync_bench.py"
TARGET_RATIO = 0.5
# Far above anything the benchmark does, so Synapse's rate limiter never answers 429.
UNLIMITED = {"per_second": 100000, "burst_count": 1000000}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: process exited {proc.returncode}; see {log}")
        try:
            with urllib.request.urlopen(url, timeout=1.0) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} not healthy after {timeout}s; see {log}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ------------------------------------------------------------------ synapse --


def synapse_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def install_synapse(venv: Path, version: str | None) -> None:
    if not synapse_python(venv).exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    spec = f"matrix-synapse=={version}" if version else "matrix-synapse"
    subprocess.run(
        [str(synapse_python(venv)), "-m", "pip", "install", "-q", spec, "py-spy"], check=True
    )


def synapse_version(venv: Path) -> str:
    out = subprocess.run(
        [str(synapse_python(venv)), "-c", "import synapse; print(synapse.__version__)"],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def configure_synapse(venv: Path, work: Path, port: int) -> Path:
    """Synapse's own generated config for `localhost`, edited for the benchmark."""
    config = work / "homeserver.yaml"
    subprocess.run(
        [str(synapse_python(venv)), "-m", "synapse.app.homeserver", "--server-name",
         "localhost", "--config-path", str(config), "--generate-config",
         "--report-stats=no", "--data-directory", str(work / "data")],
        check=True, cwd=work, capture_output=True,
    )  # fmt: skip
    data: dict[str, Any] = yaml.safe_load(config.read_text())
    data["listeners"] = [
        {
            "port": port,
            "bind_addresses": ["127.0.0.1"],
            "type": "http",
            "tls": False,
            "x_forwarded": False,
            "resources": [{"names": ["client"], "compress": False}],
        }
    ]
    data["enable_registration"] = True
    data["enable_registration_without_verification"] = True
    data["trusted_key_servers"] = []
    data["suppress_key_server_warning"] = True
    data["report_stats"] = False
    for key in (
        "rc_message", "rc_registration", "rc_registration_token_validity", "rc_joins_per_room",
        "rc_3pid_validation", "rc_room_creation", "rc_presence", "rc_delayed_event_mgmt",
        "rc_reports", "rc_media_create", "rc_admin_redaction", "rc_federation",
    ):  # fmt: skip
        data[key] = dict(UNLIMITED)
    data["rc_presence"] = {"per_user": dict(UNLIMITED)}
    data["rc_login"] = {k: dict(UNLIMITED) for k in ("address", "account", "failed_attempts")}
    data["rc_joins"] = {"local": dict(UNLIMITED), "remote": dict(UNLIMITED)}
    data["rc_invites"] = {k: dict(UNLIMITED) for k in ("per_room", "per_user", "per_issuer")}
    data["rc_federation"] = {"window_size": 1000, "sleep_limit": 10000, "reject_limit": 10000}
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    # Ganglion logs no line per request; Synapse logs one at INFO. WARNING keeps that cost
    # off Synapse's figures.
    log_config = Path(data["log_config"])
    log_data: dict[str, Any] = yaml.safe_load(log_config.read_text())
    log_data["handlers"]["file"]["filename"] = str(work / "synapse.log")
    log_data["root"]["level"] = "WARNING"
    log_config.write_text(yaml.safe_dump(log_data, sort_keys=False))
    return config


# ----------------------------------------------------------------- ganglion --


def configure_ganglion(work: Path, port: int) -> Path:
    config = work / "homeserver.yaml"
    subprocess.run(
        [sys.executable, "-m", "workers.cli", "generate-config", "--server-name", "localhost",
         "--data-dir", str(work / "data"), "--listen", f"127.0.0.1:{port}",
         "--open-registration", "-o", str(config)],
        check=True, cwd=REPO, capture_output=True, env=ganglion_env(),
    )  # fmt: skip
    data: dict[str, Any] = yaml.safe_load(config.read_text())
    # generate-config places these on the ports after `listen`, which need not be free.
    data["main"]["metrics_listen"] = f"127.0.0.1:{free_port()}"
    data["proxy"]["listen"] = f"127.0.0.1:{free_port()}"
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    return config


def ganglion_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    return env


def ganglion_commit() -> str:
    def git(*args: str) -> str:
        out = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True)
        return out.stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    return commit + (" + uncommitted changes" if git("status", "--porcelain") else "")


# -------------------------------------------------------------------- table --


def _get(result: dict[str, Any], path: Sequence[str]) -> float | None:
    node: Any = result
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return float(node) if isinstance(node, int | float) else None


ROWS: list[tuple[str, tuple[str, ...], str, bool]] = [
    # (label, path in sync_bench JSON, unit, is a timed target row)
    ("initial sync, median", ("scenarios", "initial", "median_ms"), "ms", True),
    ("initial sync, p90", ("scenarios", "initial", "p90_ms"), "ms", False),
    ("initial sync, min", ("scenarios", "initial", "min_ms"), "ms", False),
    ("initial sync, first (warm-up)", ("scenarios", "initial", "first_ms"), "ms", False),
    ("initial sync, server CPU median", ("scenarios", "initial", "server_cpu_median_ms"),
     "ms", False),
    ("incremental after change, median", ("scenarios", "incremental_change", "median_ms"),
     "ms", True),
    ("incremental after change, p90", ("scenarios", "incremental_change", "p90_ms"), "ms", False),
    ("incremental after change, min", ("scenarios", "incremental_change", "min_ms"), "ms", False),
    ("incremental after change, server CPU median",
     ("scenarios", "incremental_change", "server_cpu_median_ms"), "ms", False),
    ("incremental no change, median", ("scenarios", "incremental_empty", "median_ms"), "ms", True),
    ("incremental no change, p90", ("scenarios", "incremental_empty", "p90_ms"), "ms", False),
    ("incremental no change, min", ("scenarios", "incremental_empty", "min_ms"), "ms", False),
    ("incremental no change, server CPU median",
     ("scenarios", "incremental_empty", "server_cpu_median_ms"), "ms", False),
    ("send→last receiver, median", ("scenarios", "latency", "last_receiver", "median_ms"),
     "ms", True),
    ("send→last receiver, p90", ("scenarios", "latency", "last_receiver", "p90_ms"), "ms", False),
    ("send→last receiver, max", ("scenarios", "latency", "last_receiver", "max_ms"), "ms", False),
    ("send→any receiver, median", ("scenarios", "latency", "all_receivers", "median_ms"),
     "ms", False),
    ("send→any receiver, p90", ("scenarios", "latency", "all_receivers", "p90_ms"), "ms", False),
    ("send→any receiver, max", ("scenarios", "latency", "all_receivers", "max_ms"), "ms", False),
    ("send request, median", ("scenarios", "latency", "send_request", "median_ms"), "ms", False),
    ("server CPU per send (send + all receivers' syncs), median",
     ("scenarios", "latency", "server_cpu_per_send", "server_cpu_median_ms"), "ms", False),
    ("RSS after scenarios", ("memory", "VmRSS_kB"), "MiB", False),
    ("peak RSS", ("memory", "VmHWM_kB"), "MiB", False),
    ("set-up of the rooms (not a target)", ("setup_rooms_seconds",), "s", False),
]  # fmt: skip


def table(ganglion: dict[str, Any], synapse: dict[str, Any]) -> str:
    lines = [
        "| measure | Ganglion | Synapse | Ganglion / Synapse |",
        "| --- | ---: | ---: | ---: |",
    ]
    for label, path, unit, target in ROWS:
        g, s = _get(ganglion, path), _get(synapse, path)
        if g is None and s is None:
            continue
        if unit == "MiB":
            g = g / 1024 if g is not None else None
            s = s / 1024 if s is not None else None
        ratio = f"{g / s:.2f}" if g is not None and s else "n/a"
        if target and g is not None and s:
            ratio += " ✅" if g / s <= TARGET_RATIO else " ❌"
        shown_label = f"**{label}**" if target else label
        fmt = "{:.1f}" if unit != "ms" or (g or 0) >= 10 else "{:.2f}"
        gs = fmt.format(g) if g is not None else "n/a"
        ss = fmt.format(s) if s is not None else "n/a"
        lines.append(f"| {shown_label} ({unit}) | {gs} | {ss} | {ratio} |")
    return "\n".join(lines)


def shapes(result: dict[str, Any]) -> str:
    sc = result.get("scenarios", {})
    parts = []
    for name in ("initial", "incremental_change"):
        key = "response" if name == "initial" else "response_last"
        if name in sc:
            parts.append(f"{name}: {sc[name].get(key)}")
    if "latency" in sc:
        parts.append(f"latency missed deliveries: {sc['latency'].get('missed_deliveries')}")
    parts.append(f"429 answers: {result.get('rate_limited_responses')}")
    loads = [
        v
        for phase in sc.values()
        if isinstance(phase, dict)
        for k, v in phase.items()
        if k.startswith("loadavg_1m")
    ]
    if loads:
        parts.append(f"1-min load average during timed phases: {min(loads)}–{max(loads)}")
    return "; ".join(parts)


# --------------------------------------------------------------------- main --


def run_bench(
    name: str,
    base_url: str,
    pid: int,
    out: Path,
    extra: Sequence[str],
    profile: Path | None,
    py_spy: Path,
) -> dict[str, Any]:
    argv = [sys.executable, str(BENCH), "--base-url", base_url, "--pid", str(pid),
            "--json", str(out), *extra]  # fmt: skip
    if profile is not None:
        argv += ["--profile-pid", str(pid), "--profile-dir", str(profile), "--py-spy", str(py_spy)]
    print(f"== {name}: {' '.join(argv)}", file=sys.stderr)
    subprocess.run(argv, check=True)
    loaded: dict[str, Any] = json.loads(out.read_text())
    return loaded


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in args_list:
        cut = args_list.index("--")
        args_list, extra = args_list[:cut], args_list[cut + 1 :]
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    default_venv = os.environ.get("GANGLION_BENCH_SYNAPSE_VENV") or str(
        REPO.parent / "synapse-venv"
    )
    ap.add_argument("--synapse-venv", type=Path, default=Path(default_venv))
    ap.add_argument("--install-synapse", action="store_true")
    ap.add_argument("--synapse-version", help="pin matrix-synapse==VERSION when installing")
    ap.add_argument(
        "--work-dir", type=Path, help="configs, logs, databases, JSON (default: a new temp dir)"
    )
    ap.add_argument("--synapse-first", action="store_true")
    ap.add_argument("--profile", action="store_true", help="py-spy the Ganglion run")
    ap.add_argument("--markdown", type=Path, help="also write the table here")
    args = ap.parse_args(args_list)

    venv: Path = args.synapse_venv.resolve()
    if venv == REPO or REPO in venv.parents:
        ap.error("--synapse-venv must be outside the repository")
    if args.install_synapse:
        install_synapse(venv, args.synapse_version)
    if not synapse_python(venv).exists():
        ap.error(f"no Synapse virtualenv at {venv}; pass --install-synapse")

    work = args.work_dir or Path(tempfile.mkdtemp(prefix="ganglion-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    (work / "ganglion").mkdir(exist_ok=True)
    (work / "synapse").mkdir(exist_ok=True)
    g_port, s_port = free_port(), free_port()
    g_config = configure_ganglion(work / "ganglion", g_port)
    s_config = configure_synapse(venv, work / "synapse", s_port)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        g_log = work / "ganglion" / "ganglion.log"
        with g_log.open("ab") as fh:
            g_proc = subprocess.Popen(
                [sys.executable, "-m", "workers.cli", "run", "-c", str(g_config)],
                cwd=REPO, env=ganglion_env(), stdout=fh, stderr=subprocess.STDOUT,
            )  # fmt: skip
        procs.append(g_proc)
        s_log = work / "synapse" / "stdout.log"
        with s_log.open("ab") as fh:
            s_proc = subprocess.Popen(
                [str(synapse_python(venv)), "-m", "synapse.app.homeserver", "-c", str(s_config)],
                cwd=work / "synapse", stdout=fh, stderr=subprocess.STDOUT,
            )  # fmt: skip
        procs.append(s_proc)
        g_url, s_url = f"http://127.0.0.1:{g_port}", f"http://127.0.0.1:{s_port}"
        wait_healthy(g_url + "/health", g_proc, g_log, 60)
        wait_healthy(s_url + "/health", s_proc, s_log, 180)

        order = [("synapse", s_url, s_proc), ("ganglion", g_url, g_proc)]
        if not args.synapse_first:
            order.reverse()
        results: dict[str, dict[str, Any]] = {}
        for name, url, proc in order:
            profile = work / "profile" if args.profile and name == "ganglion" else None
            results[name] = run_bench(
                name, url, proc.pid, work / f"{name}.json", extra, profile, venv / "bin" / "py-spy"
            )
    finally:
        for proc in procs:
            stop(proc)

    header = [
        f"- command: `{' '.join(['bench/compare_synapse.py', *(argv or sys.argv[1:])])}`",
        f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        f"- machine: {os.cpu_count()} CPUs (nproc), {_ram()} RAM, Python {sys.version.split()[0]}",
        f"- Synapse {synapse_version(venv)} (SQLite); Ganglion {ganglion_commit()} (SQLite)",
        f"- parameters: {json.dumps(results['ganglion'].get('params', {}))}",
        f"- Ganglion responses: {shapes(results['ganglion'])}",
        f"- Synapse responses: {shapes(results['synapse'])}",
        f"- raw results: {work}",
    ]
    text = "\n".join(header) + "\n\n" + table(results["ganglion"], results["synapse"]) + "\n"
    print(text)
    if args.markdown is not None:
        args.markdown.write_text(text)
    return 0


def _ram() -> str:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    return "unknown"


if __name__ == "__main__":
    sys.exit(main())
