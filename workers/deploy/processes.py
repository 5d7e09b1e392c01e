"""The process list of a deployment: what to start, one command per process."""

from __future__ import annotations

from workers.config import HomeserverConfig

DEFAULT_EXECUTABLE = "ganglion"


def process_commands(
    config: HomeserverConfig, config_path: str, *, executable: str = DEFAULT_EXECUTABLE
) -> list[tuple[str, list[str]]]:
    """[(process name, argv)]: main first, then each worker in config order."""
    commands: list[tuple[str, list[str]]] = [
        (config.main.name, [executable, "run", "-c", config_path])
    ]
    for w in config.workers:
        commands.append((w.name, [executable, "worker", w.name, "-c", config_path]))
    return commands
