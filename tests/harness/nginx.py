"""nginx in the foreground with a test-owned prefix directory."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

from ._process import log_tail, spawn, terminate
from .ports import port_is_open
from .services import nginx_binary
from .waiting import wait_until

_COMMENT = re.compile(r"#[^\n]*")
_DAEMON = re.compile(r"^\s*daemon\s+(on|off)\s*;", re.M)
_PID = re.compile(r"^\s*pid\s+\S", re.M)
_LISTEN = re.compile(r"^\s*listen\s+(?:\[[^\]]*\]:|[^\s;:]+:)?(\d+)\b", re.M)


def listen_ports(config_text: str) -> list[int]:
    """TCP ports of every `listen` directive in an nginx config."""
    text = _COMMENT.sub("", config_text)
    return sorted({int(m.group(1)) for m in _LISTEN.finditer(text)})


def simple_proxy_config(
    listen_port: int, upstream_port: int, prefix: str | os.PathLike[str]
) -> str:
    """A minimal config: 127.0.0.1:`listen_port` proxies everything to 127.0.0.1:`upstream_port`.

    All paths are under `prefix`, so it also works when not running as root.
    """
    p = Path(prefix)
    return f"""\
worker_processes 1;
error_log {p}/logs/error.log info;
pid {p}/logs/nginx.pid;
events {{ worker_connections 64; }}
http {{
    access_log {p}/logs/access.log;
    client_body_temp_path {p}/tmp/body;
    proxy_temp_path {p}/tmp/proxy;
    fastcgi_temp_path {p}/tmp/fastcgi;
    uwsgi_temp_path {p}/tmp/uwsgi;
    scgi_temp_path {p}/tmp/scgi;
    server {{
        listen 127.0.0.1:{listen_port};
        location / {{
            proxy_pass http://127.0.0.1:{upstream_port};
            proxy_set_header Host $host;
        }}
    }}
}}
"""


class NginxServer:
    """Runs `nginx -p PREFIX -c PREFIX/nginx.conf` in the foreground.

    `daemon off;` is added with `-g` unless the config already says so (a config
    with `daemon on;` is rejected). A `pid` directive is added when missing so a
    test nginx never touches /run/nginx.pid. `start()` validates the config with
    `nginx -t`, then waits until every `listen` port (or `ports`) accepts
    connections.
    """

    def __init__(
        self,
        config_text: str,
        prefix_dir: str | os.PathLike[str],
        *,
        ports: Iterable[int] | None = None,
        binary: str | None = None,
        start_timeout: float = 15.0,
    ) -> None:
        self.config_text = config_text
        self.prefix = Path(prefix_dir).resolve()
        self.config_path = self.prefix / "nginx.conf"
        self.log_path = self.prefix / "logs" / "nginx.out"
        self.error_log = self.prefix / "logs" / "error.log"
        self.ports = list(ports) if ports is not None else listen_ports(config_text)
        binary = binary or nginx_binary()
        if binary is None:
            raise FileNotFoundError("nginx binary not found")
        self.binary = binary
        self.start_timeout = start_timeout
        self._proc: subprocess.Popen[bytes] | None = None

        stripped = _COMMENT.sub("", config_text)
        daemon = _DAEMON.search(stripped)
        if daemon and daemon.group(1) == "on":
            raise ValueError("nginx config says `daemon on;`; the harness needs the foreground")
        globals_: list[str] = []
        if not daemon:
            globals_.append("daemon off;")
        if not _PID.search(stripped):
            globals_.append(f"pid {self.prefix}/logs/nginx.pid;")
        self._globals = " ".join(globals_)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def argv(self, *extra: str) -> list[str]:
        argv = [self.binary, "-p", f"{self.prefix}/", "-c", str(self.config_path)]
        argv += ["-e", str(self.error_log)]
        if self._globals:
            argv += ["-g", self._globals]
        return argv + list(extra)

    def _prepare(self) -> None:
        for sub in ("logs", "tmp"):
            (self.prefix / sub).mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.config_text)

    def start(self) -> None:
        if self.running:
            return
        self._prepare()
        busy = [p for p in self.ports if port_is_open(p)]
        if busy:
            raise RuntimeError(f"ports {busy} already in use; cannot start nginx")
        test = subprocess.run(self.argv("-t", "-q"), capture_output=True, text=True, timeout=30)
        if test.returncode != 0:
            raise RuntimeError(f"nginx rejected {self.config_path}:\n{test.stdout}{test.stderr}")
        proc = self._proc = spawn(self.argv(), self.log_path)

        def ready() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"nginx exited with {proc.returncode}; error log tail:\n"
                    + log_tail(self.error_log)
                    + "\n"
                    + log_tail(self.log_path)
                )
            return all(port_is_open(p) for p in self.ports)

        wait_until(ready, self.start_timeout, description=f"nginx listening on {self.ports}")

    def stop(self, timeout: float = 10.0) -> None:
        if self._proc is None:
            return
        terminate(self._proc, timeout)
        self._proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> NginxServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
