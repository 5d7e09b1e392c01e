"""A private redis-server per test, which can be stopped and restarted on the same port."""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType

from ._process import log_tail, spawn, terminate
from .ports import free_port, port_is_open
from .services import redis_binary
from .waiting import wait_until


def redis_ping(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    """True if a Redis server on host:port answers PING with PONG."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """A `redis-server` child process bound to 127.0.0.1:`port`, without persistence.

    It never touches the machine's shared Redis, so tests may `stop()`, `start()`
    and `restart()` it to simulate outages; the port stays the same.
    """

    def __init__(
        self,
        port: int | None = None,
        directory: str | os.PathLike[str] | None = None,
        binary: str | None = None,
        start_timeout: float = 15.0,
    ) -> None:
        self.host = "127.0.0.1"
        self.port = port if port is not None else free_port()
        self.directory = Path(directory or tempfile.mkdtemp(prefix="ganglion-redis-"))
        self.directory.mkdir(parents=True, exist_ok=True)
        self.log_path = self.directory / "redis.log"
        binary = binary or redis_binary()
        if binary is None:
            raise FileNotFoundError("redis-server binary not found")
        self.binary = binary
        self.start_timeout = start_timeout
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def argv(self) -> list[str]:
        return [
            self.binary,
            "--port", str(self.port),
            "--bind", self.host,
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.directory),
            "--daemonize", "no",
        ]  # fmt: skip

    def start(self) -> None:
        """Start the server and wait until it answers PING."""
        if self.running:
            return
        if port_is_open(self.port):
            raise RuntimeError(f"port {self.port} is already in use; cannot start redis-server")
        proc = self._proc = spawn(self.argv(), self.log_path)

        def ready() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"redis-server exited with {proc.returncode} on port {self.port}; log tail:\n"
                    + log_tail(self.log_path)
                )
            return redis_ping(self.port)

        wait_until(ready, self.start_timeout, description=f"redis-server on port {self.port}")

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server and wait until its port no longer accepts connections."""
        if self._proc is None:
            return
        terminate(self._proc, timeout)
        self._proc = None
        wait_until(
            lambda: not port_is_open(self.port),
            timeout,
            description=f"redis port {self.port} to close",
        )

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
