"""One Ganglion process on SQLite, as `./scripts/run-server` runs it, for HTTP tests.

`single_server(directory, tweak=...)` generates a config with the real CLI, lets a test
adjust it (limits, registration…), starts `ganglion run`, and stops it on exit.
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
from .matrix import MatrixClient
from .ports import free_port

_names = itertools.count()


class SingleServer:
    def __init__(
        self, base_url: str, process: GanglionProcess, config_path: Path, config: dict[str, Any]
    ) -> None:
        self.base_url = base_url
        self.process = process
        self.config_path = config_path
        self.config = config
        self.db_path = Path(config["database"]["args"]["database"])
        self._log_offset = 0

    def new_errors(self) -> list[str]:
        """ERROR lines and tracebacks logged since the previous call."""
        text = self.process.log_path.read_bytes()
        new, self._log_offset = text[self._log_offset :], len(text)
        return [
            line
            for line in new.decode("utf-8", "replace").splitlines()
            if '"level": "ERROR"' in line or "Traceback" in line
        ]

    def query(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Reads the server's SQLite database directly (WAL lets us read while it runs)."""
        conn = sqlite3.connect(self.db_path, timeout=10)
        try:
            return conn.execute(sql, args).fetchall()
        finally:
            conn.close()

    def client(self) -> MatrixClient:
        return MatrixClient(self.base_url)

    def new_user(self, prefix: str = "user") -> MatrixClient:
        """A freshly registered, logged-in client with a unique user name."""
        client = self.client()
        status, body = client.register(f"{prefix}{next(_names)}x{free_port()}")
        assert status == 200, body
        return client


@contextlib.contextmanager
def single_server(
    directory: Path, *, tweak: Callable[[dict[str, Any]], None] | None = None
) -> Iterator[SingleServer]:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "homeserver.yaml"
    port = free_port()
    run_cli(
        "generate-config",
        "--server-name", "localhost",
        "--data-dir", str(directory / "data"),
        "--listen", f"127.0.0.1:{port}",
        "--open-registration",
        "-o", str(path),
    )  # fmt: skip
    config = yaml.safe_load(path.read_text())
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
