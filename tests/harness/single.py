"""One Ganglion process, as `./scripts/run-server` runs it, for HTTP tests.

`single_server(directory, tweak=...)` generates a config with the real CLI (SQLite, or
PostgreSQL given a DSN), lets a test adjust it (limits, registration…), starts
`ganglion run`, and stops it on exit.
"""

from __future__ import annotations

import contextlib
import itertools
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

from .ganglion import GanglionProcess, run_cli
from .matrix import CLIENT_V3, MatrixClient
from .metrics import Metrics, scrape
from .ports import free_port
from .waiting import wait_until

PASSWORD = "correct horse battery"

_names = itertools.count()


class SingleServer:
    def __init__(
        self, base_url: str, process: GanglionProcess, config_path: Path, config: dict[str, Any]
    ) -> None:
        self.base_url = base_url
        self.process = process
        self.config_path = config_path
        self.config = config
        database = config["database"]
        # None on PostgreSQL.
        self.db_path = Path(database["args"]["database"]) if database["name"] == "sqlite3" else None
        self.metrics_url = f"http://{config['main']['metrics_listen']}"
        replication_listen = config["main"].get("replication_listen")
        self.replication_url = f"http://{replication_listen}" if replication_listen else None
        self.replication_secret: str = config["replication_secret"]
        self._log_offset = 0

    def url(self, path: str) -> str:
        """`path` is relative to /_matrix/client/v3 unless it starts with "/"."""
        return self.base_url + (path if path.startswith("/") else f"{CLIENT_V3}/{path}")

    def new_errors(self) -> list[str]:
        """ERROR lines and tracebacks logged since the previous call."""
        text = self.process.log_path.read_bytes()
        new, self._log_offset = text[self._log_offset :], len(text)
        return [
            line
            for line in new.decode("utf-8", "replace").splitlines()
            if '"level": "ERROR"' in line or "Traceback" in line
        ]

    @contextlib.contextmanager
    def logs_no_new_errors(self) -> Iterator[None]:
        """Around a test: afterwards the process still runs and has logged no internal error."""
        self.new_errors()
        yield
        assert self.process.running, self.process.log_tail()
        assert self.new_errors() == []

    def query(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Reads the server's SQLite database directly (WAL lets us read while it runs)."""
        assert self.db_path is not None, "query() reads SQLite databases only"
        conn = sqlite3.connect(self.db_path, timeout=10)
        try:
            return conn.execute(sql, args).fetchall()
        finally:
            conn.close()

    def client(self) -> MatrixClient:
        return MatrixClient(self.base_url)

    def register(self, username: str, password: str = PASSWORD) -> MatrixClient:
        """A logged-in client of the newly registered `username`."""
        client = self.client()
        status, body = client.register(username, password)
        assert status == 200, body
        return client

    def new_user(self, prefix: str = "user") -> MatrixClient:
        """A freshly registered, logged-in client with a unique user name."""
        return self.register(f"{prefix}{next(_names)}x{free_port()}")

    def metrics(self) -> Metrics:
        return scrape(self.metrics_url)

    def wait_for_waiting_listeners(self, count: int, timeout: float = 10.0) -> None:
        """Until at least `count` /sync long-polls are parked, waiting to be woken."""

        def parked() -> bool:
            return (self.metrics().first("ganglion_sync_waiting_listeners") or 0) >= count

        wait_until(parked, timeout, description=f"{count} parked long-poll(s)")


@contextlib.contextmanager
def single_server(
    directory: Path,
    *,
    tweak: Callable[[dict[str, Any]], None] | None = None,
    open_registration: bool = True,
    postgres_dsn: str | None = None,
) -> Iterator[SingleServer]:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "homeserver.yaml"
    port = free_port()
    run_cli(
        "generate-config",
        "--server-name", "localhost",
        "--data-dir", str(directory / "data"),
        "--listen", f"127.0.0.1:{port}",
        *(["--open-registration"] if open_registration else []),
        *(["--postgres", postgres_dsn] if postgres_dsn is not None else []),
        "-o", str(path),
    )  # fmt: skip
    config = yaml.safe_load(path.read_text())
    assert config["enable_registration"] is open_registration
    # generate-config puts metrics (and the proxy) on ports after --listen: not known free.
    config["main"]["metrics_listen"] = f"127.0.0.1:{free_port()}"
    if isinstance(config.get("proxy"), dict):
        config["proxy"]["listen"] = f"127.0.0.1:{free_port()}"
    # Tests register many users; the cheapest allowed hash keeps them fast.
    config["bcrypt_rounds"] = 4
    if tweak is not None:
        tweak(config)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    base_url = f"http://127.0.0.1:{port}"
    proc = GanglionProcess(
        ["run", "-c", path], "main", directory / "main.log", base_url + "/health"
    )
    proc.start()
    try:
        yield SingleServer(base_url, proc, path, config)
    finally:
        proc.stop()
