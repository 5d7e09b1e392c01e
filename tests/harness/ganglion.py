"""Ganglion processes and whole deployments (main + workers + nginx) for tests.

Processes are started as `python -m workers.cli ...` with the repo root on
PYTHONPATH, so no install is needed. Readiness is `GET <health_url>` returning
200; a process that exits while starting fails fast with the tail of its log.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

from ._process import log_tail, spawn, terminate
from .nginx import NginxServer, listen_ports
from .ports import free_port
from .waiting import wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]
HEALTH_PATH = "/health"
MAIN = "main"


def process_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """os.environ plus the repo root on PYTHONPATH and unbuffered output."""
    env = dict(os.environ)
    paths = [str(REPO_ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def cli_argv(*args: str | os.PathLike[str]) -> list[str]:
    """argv for `ganglion ARGS...` run from source: `python -m workers.cli ARGS...`."""
    return [sys.executable, "-m", "workers.cli", *map(str, args)]


def run_cli(
    *args: str | os.PathLike[str],
    timeout: float = 60.0,
    check: bool = True,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a short-lived `ganglion` subcommand; raise with its output if it fails."""
    argv = cli_argv(*args)
    result = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=process_env(env),
        cwd=REPO_ROOT,
        stdin=subprocess.DEVNULL,
    )
    if check and result.returncode != 0:
        raise RuntimeError(
            f"`ganglion {' '.join(map(str, args))}` exited with {result.returncode}\n"
            f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        )
    return result


def http_status(url: str, timeout: float = 2.0) -> int | None:
    """HTTP status of GET `url`, or None if nothing answered."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as e:
        return e.code
    except (urllib.error.URLError, OSError):
        return None


class GanglionProcess:
    """One Ganglion process: `GanglionProcess(["run", "-c", cfg], "main", log, url)`.

    `argv` are the CLI arguments after `ganglion` (e.g. `run -c FILE` or
    `worker NAME -c FILE`). Output goes to `log_path` (appended across restarts).
    """

    def __init__(
        self,
        argv: Sequence[str | os.PathLike[str]],
        name: str,
        log_path: str | os.PathLike[str],
        health_url: str,
        *,
        env: Mapping[str, str] | None = None,
        start_timeout: float = 60.0,
        stop_timeout: float = 15.0,
    ) -> None:
        self.argv = [str(a) for a in argv]
        self.name = name
        self.log_path = Path(log_path)
        self.health_url = health_url
        self.env = dict(env or {})
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def returncode(self) -> int | None:
        return self._proc.poll() if self._proc is not None else None

    def log_tail(self, lines: int = 40) -> str:
        return log_tail(self.log_path, lines)

    def start(self) -> None:
        """Spawn the process and wait until `health_url` returns 200."""
        if self.running:
            return
        proc = self._proc = spawn(
            cli_argv(*self.argv), self.log_path, env=process_env(self.env), cwd=REPO_ROOT
        )

        def healthy() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"ganglion process {self.name!r} exited with {proc.returncode} while "
                    f"starting ({' '.join(self.argv)}); log tail of {self.log_path}:\n"
                    + self.log_tail()
                )
            return http_status(self.health_url, timeout=1.0) == 200

        try:
            wait_until(
                healthy,
                self.start_timeout,
                0.1,
                description=f"{self.name} to answer 200 on {self.health_url}",
            )
        except AssertionError as e:
            self.stop()
            raise AssertionError(f"{e}\nlog tail of {self.log_path}:\n{self.log_tail()}") from e
        except BaseException:
            self.stop()
            raise

    def stop(self, timeout: float | None = None) -> int | None:
        """SIGTERM, then SIGKILL after `timeout` (default `stop_timeout`). Returns exit code."""
        if self._proc is None:
            return None
        code = terminate(self._proc, self.stop_timeout if timeout is None else timeout)
        self._proc = None
        return code

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> GanglionProcess:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


# ------------------------------------------------------------------ config --


def parse_listen(value: Any) -> tuple[str, int]:
    """(host, port) from a listen value: "host:port", {host, port} or a bare port."""
    if isinstance(value, Mapping):
        return str(value.get("host", "127.0.0.1")), int(value["port"])
    if isinstance(value, int):
        return "127.0.0.1", value
    text = str(value)
    host, sep, port = text.rpartition(":")
    if not sep:
        return "127.0.0.1", int(text)
    return host.strip("[]") or "127.0.0.1", int(port)


def _with_port(value: Any, host: str, port: int) -> Any:
    """`value` rewritten to host:port, keeping its shape (string or mapping)."""
    if isinstance(value, Mapping):
        return {**value, "host": host, "port": port}
    if isinstance(value, int):
        return port
    return f"{host}:{port}"


def _rewrite_listens(node: Any) -> Any:
    """Every key ending in `listen` (listen, metrics_listen, ...) → 127.0.0.1:<free port>."""
    if isinstance(node, dict):
        for key, value in node.items():
            if isinstance(key, str) and key.endswith("listen") and value is not None:
                node[key] = _with_port(value, "127.0.0.1", free_port())
            else:
                _rewrite_listens(value)
    elif isinstance(node, list):
        for item in node:
            _rewrite_listens(item)
    return node


def make_deployment_config(
    tmp_dir: str | os.PathLike[str],
    pg_dsn: str,
    redis_port: int,
    sync_workers: int = 2,
    *,
    server_name: str = "localhost",
    extra_args: Sequence[str] = (),
) -> Path:
    """`ganglion generate-config` a multi-process deployment in `tmp_dir`, on free ports.

    Every listener (main, metrics, replication, each worker, proxy) is moved to
    127.0.0.1 on a free port, `public_baseurl` is the proxy's URL and Redis
    points at 127.0.0.1:`redis_port`.
    Returns the path of the YAML file.
    """
    tmp = Path(tmp_dir)
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / "homeserver.yaml"
    run_cli(
        "generate-config",
        "--server-name", server_name,
        "--data-dir", str(tmp / "data"),
        "--listen", f"127.0.0.1:{free_port()}",
        "--open-registration",
        "--postgres", pg_dsn,
        "--redis", f"redis://127.0.0.1:{redis_port}",
        "--sync-workers", str(sync_workers),
        *extra_args,
        "-o", str(path),
    )  # fmt: skip
    config = yaml.safe_load(path.read_text())
    if not isinstance(config, dict):
        raise RuntimeError(f"generate-config wrote a non-mapping YAML document to {path}")
    _rewrite_listens(config)
    proxy = config.get("proxy")
    if isinstance(proxy, dict) and proxy.get("listen"):
        host, port = parse_listen(proxy["listen"])
        config["public_baseurl"] = f"http://{host}:{port}/"
    redis_cfg = config.get("redis")
    config["redis"] = {
        **(redis_cfg if isinstance(redis_cfg, dict) else {}),
        "enabled": True,
        "host": "127.0.0.1",
        "port": redis_port,
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def load_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    data = yaml.safe_load(Path(path).read_text())
    if not isinstance(data, dict):
        raise RuntimeError(f"{path} is not a YAML mapping")
    return data


# -------------------------------------------------------------- deployment --


def _parse_process_names(output: str, known: Sequence[str]) -> list[str]:
    """Process names, in order, from `ganglion deploy processes` output.

    Accepts JSON (a list of names or of objects with "name") or one process per
    line whose first word (minus a trailing ':') is its name.
    """
    names: list[str] = []
    try:
        data = json.loads(output)
    except ValueError:
        data = None
    if isinstance(data, list):
        for item in data:
            names.append(str(item["name"] if isinstance(item, Mapping) else item))
    elif isinstance(data, Mapping) and isinstance(data.get("processes"), list):
        return _parse_process_names(json.dumps(data["processes"]), known)
    else:
        for line in output.splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                names.append(line.split()[0].rstrip(":"))
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise RuntimeError(
            f"cannot understand `ganglion deploy processes` output (known processes "
            f"{list(known)}, got {names}):\n{output}"
        )
    return names


class Deployment:
    """All processes of a deployment config: main first, then workers, then nginx.

    `start()` starts them in `ganglion deploy processes` order and, when
    `with_nginx`, nginx from `ganglion deploy nginx -c FILE --prefix DIR`. If any
    start fails, everything already started is stopped before the error
    propagates. `stop()` stops everything (nginx, workers, main), always trying
    each one.
    """

    def __init__(
        self,
        config_path: str | os.PathLike[str],
        work_dir: str | os.PathLike[str],
        *,
        with_nginx: bool = True,
        env: Mapping[str, str] | None = None,
        start_timeout: float = 60.0,
    ) -> None:
        self.config_path = Path(config_path).resolve()
        self.work_dir = Path(work_dir)
        self.log_dir = self.work_dir / "logs"
        self.with_nginx = with_nginx
        self.env = dict(env or {})
        self.start_timeout = start_timeout
        self.config = load_config(self.config_path)
        self.processes: dict[str, GanglionProcess] = {}
        self.nginx: NginxServer | None = None

    # -- addresses
    def process_names(self) -> list[str]:
        """Names from the config: main, then workers in file order."""
        workers = self.config.get("workers") or {}
        return [MAIN, *workers]

    def _process_config(self, name: str) -> Mapping[str, Any]:
        if name == MAIN:
            return self.config.get(MAIN) or {}
        return (self.config.get("workers") or {})[name] or {}

    def address_of(self, name: str, key: str = "listen") -> tuple[str, int]:
        """(host, port) of a process's `listen` (or `metrics_listen`, ...)."""
        return parse_listen(self._process_config(name)[key])

    def url_of(self, name: str, key: str = "listen") -> str:
        host, port = self.address_of(name, key)
        return f"http://{host}:{port}"

    def health_url_of(self, name: str) -> str:
        cfg = self._process_config(name)
        key = "listen" if cfg.get("listen") else "metrics_listen"
        return self.url_of(name, key) + HEALTH_PATH

    @property
    def proxy_url(self) -> str:
        """Base URL of the reverse proxy (what clients use)."""
        host, port = parse_listen((self.config.get("proxy") or {})["listen"])
        return f"http://{host}:{port}"

    @property
    def base_url(self) -> str:
        """The client-facing URL: the proxy if nginx runs, else main directly."""
        return self.proxy_url if self.with_nginx else self.url_of(MAIN)

    # -- lifecycle
    def process_order(self) -> list[str]:
        out = run_cli("deploy", "processes", "-c", self.config_path, env=self.env).stdout
        return _parse_process_names(out, self.process_names())

    def make_process(self, name: str) -> GanglionProcess:
        cli = (
            ["run", "-c", str(self.config_path)]
            if name == MAIN
            else ["worker", name, "-c", str(self.config_path)]
        )
        return GanglionProcess(
            cli,
            name,
            self.log_dir / f"{name}.log",
            self.health_url_of(name),
            env=self.env,
            start_timeout=self.start_timeout,
        )

    def start(self) -> None:
        try:
            for name in self.process_order():
                proc = self.processes[name] = self.make_process(name)
                proc.start()
            if self.with_nginx:
                self.start_nginx()
        except BaseException:
            self.stop()
            raise

    def start_nginx(self) -> NginxServer:
        prefix = self.work_dir / "nginx"
        text = run_cli(
            "deploy", "nginx", "-c", self.config_path, "--prefix", prefix, env=self.env
        ).stdout
        proxy = (self.config.get("proxy") or {}).get("listen")
        ports = [parse_listen(proxy)[1]] if proxy else listen_ports(text)
        self.nginx = NginxServer(text, prefix, ports=ports)
        self.nginx.start()
        return self.nginx

    def stop(self) -> None:
        """Stop nginx and every process (reverse start order); re-raise the first error."""
        errors: list[BaseException] = []
        if self.nginx is not None:
            try:
                self.nginx.stop()
            except BaseException as e:  # keep stopping the rest
                errors.append(e)
        for proc in reversed(list(self.processes.values())):
            try:
                proc.stop()
            except BaseException as e:
                errors.append(e)
        if errors:
            raise errors[0]

    def restart(self, name: str) -> None:
        """Restart one process (or "nginx") in place."""
        if name == "nginx":
            if self.nginx is None:
                raise RuntimeError("nginx is not part of this deployment")
            self.nginx.restart()
        else:
            self.processes[name].restart()

    def logs(self, lines: int = 40) -> str:
        """Tails of every process log, for failure messages."""
        parts = [f"==== {n} ====\n{p.log_tail(lines)}" for n, p in self.processes.items()]
        if self.nginx is not None:
            parts.append(f"==== nginx ====\n{log_tail(self.nginx.error_log, lines)}")
        return "\n".join(parts)

    def __enter__(self) -> Deployment:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
