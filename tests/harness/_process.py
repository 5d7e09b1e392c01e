"""Spawning and stopping child processes for the harness (internal)."""

from __future__ import annotations

import atexit
import ctypes
import os
import signal
import subprocess
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

_libc: ctypes.CDLL | None
try:
    _libc = ctypes.CDLL(None, use_errno=True) if os.uname().sysname == "Linux" else None
except OSError:
    _libc = None

# Every child still alive when the interpreter exits is killed (safety net for
# interrupted runs; fixtures normally stop everything themselves).
_live: set[subprocess.Popen[bytes]] = set()


@atexit.register
def _kill_leftovers() -> None:
    for proc in list(_live):
        if proc.poll() is None:
            _killpg(proc.pid)


def _die_with_parent(parent_pid: int) -> None:
    """In the child (Linux): get SIGTERM when the test process dies, even by SIGKILL."""
    if _libc is None or _libc.prctl(1, signal.SIGTERM, 0, 0, 0) != 0:  # PR_SET_PDEATHSIG
        return
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def spawn(
    argv: Sequence[str],
    log_path: str | os.PathLike[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start `argv` in its own session, stdout and stderr appended to `log_path`.

    On Linux, when spawned from the main thread, the child gets SIGTERM if the
    test process dies (PR_SET_PDEATHSIG), so a killed run leaves no servers behind.
    """
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    parent = os.getpid()
    # The death signal fires when the spawning *thread* exits: main thread only.
    tie = _libc is not None and threading.current_thread() is threading.main_thread()
    with open(log_path, "ab") as log:
        log.write(f"---- harness: starting {' '.join(argv)}\n".encode())
        log.flush()
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
            preexec_fn=(lambda: _die_with_parent(parent)) if tie else None,
        )
    _live.add(proc)
    return proc


def terminate(
    proc: subprocess.Popen[bytes], timeout: float = 10.0, sig: int = signal.SIGTERM
) -> int:
    """Send `sig`, wait up to `timeout` s, then SIGKILL the whole process group.

    Leftover members of the process group (e.g. nginx workers) are killed too.
    Returns the exit code.
    """
    if proc.poll() is None:
        try:
            proc.send_signal(sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            _killpg(proc.pid)
            proc.wait(10)
    _killpg(proc.pid)
    _live.discard(proc)
    return proc.returncode


def _killpg(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def log_tail(path: str | os.PathLike[str], lines: int = 40) -> str:
    """The last `lines` lines of a log file, or a note that it is missing."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            text = f.read().decode("utf-8", "replace")
    except OSError as e:
        return f"<no log at {path}: {e}>"
    return "\n".join(text.splitlines()[-lines:])
