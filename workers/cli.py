"""The `ganglion` command line.

    ganglion generate-config --server-name NAME --data-dir DIR -o FILE [...]
    ganglion run -c FILE                    # the main process
    ganglion worker NAME -c FILE            # one worker
    ganglion deploy nginx|prometheus|systemd|processes -c FILE
    ganglion register-user -c FILE [--user NAME] [--password P] [--admin|--no-admin]
    ganglion check-config -c FILE

Configuration problems print `ganglion: config error: <key>: <reason>` and exit 2.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
from collections.abc import Sequence

from workers.config import MAIN_PROCESS, ConfigError, HomeserverConfig, load_config

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2

DEPLOY_TARGETS = ("nginx", "prometheus", "systemd", "processes")


class _UsageError(Exception):
    """Bad command-line usage found after parsing (exit 2, like argparse's own)."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result: int = args.func(args)
        return result
    except ConfigError as e:
        print(f"ganglion: config error: {e.key}: {e.reason}", file=sys.stderr)
        return EXIT_CONFIG
    except _UsageError as e:
        print(f"ganglion: error: {e}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ganglion", description="Ganglion, a Matrix homeserver that scales out."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add_config_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "-c", "--config", required=True, metavar="FILE", help="the Ganglion config file"
        )

    g = sub.add_parser("generate-config", help="write a new config file and signing key")
    g.add_argument("--server-name", required=True, help="the domain of user IDs")
    g.add_argument("--data-dir", required=True, help="where Ganglion keeps its state")
    g.add_argument("--listen", default="127.0.0.1:8008", metavar="HOST:PORT")
    g.add_argument("--open-registration", action="store_true", help="let anyone register")
    g.add_argument("--postgres", metavar="DSN", help="PostgreSQL DSN (default: SQLite)")
    g.add_argument("--redis", metavar="URL", help="redis://[:PASSWORD@]HOST[:PORT][/DB]")
    g.add_argument(
        "--sync-workers", type=int, default=0, metavar="N", help="sync workers (needs both)"
    )
    g.add_argument(
        "--client-readers", type=int, default=0, metavar="N", help="client readers (needs both)"
    )
    g.add_argument("--base-port", type=int, metavar="PORT", help="first metrics/internal port")
    g.add_argument("-o", "--output", required=True, metavar="FILE")
    g.add_argument("--force", action="store_true", help="overwrite an existing config file")
    g.set_defaults(func=_cmd_generate_config)

    r = sub.add_parser("run", help="run the main process")
    add_config_arg(r)
    r.set_defaults(func=_cmd_run)

    w = sub.add_parser("worker", help="run one worker process")
    w.add_argument("name", metavar="NAME", help="the worker's name in the config")
    add_config_arg(w)
    w.set_defaults(func=_cmd_worker)

    d = sub.add_parser("deploy", help="print a deployment artefact derived from the config")
    d.add_argument("target", choices=DEPLOY_TARGETS)
    add_config_arg(d)
    d.add_argument("--prefix", metavar="DIR", help="nginx: put pid, logs and temp dirs under DIR")
    d.add_argument(
        "--snippet",
        action="store_true",
        help="nginx: only the http-level part, for /etc/nginx/conf.d/",
    )
    d.add_argument("--exec-path", metavar="PATH", help="systemd/processes: the ganglion binary")
    d.add_argument("--user", metavar="USER", help="systemd: run the services as USER")
    d.set_defaults(func=_cmd_deploy)

    u = sub.add_parser("register-user", help="create a user account")
    add_config_arg(u)
    u.add_argument("--user", metavar="NAME", help="localpart of the new user")
    u.add_argument("--password", metavar="P")
    u.add_argument(
        "--admin",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="make the user a server admin (default: ask)",
    )
    u.set_defaults(func=_cmd_register_user)

    k = sub.add_parser("check-config", help="validate the config and signing key")
    add_config_arg(k)
    k.set_defaults(func=_cmd_check_config)
    return parser


# -- commands ---------------------------------------------------------------


def _cmd_generate_config(args: argparse.Namespace) -> int:
    from workers.generate_config import generate_config, write_signing_key

    out = args.output
    if os.path.exists(out) and not args.force:
        raise _UsageError(f"{out} already exists; use --force to overwrite it")
    text = generate_config(
        server_name=args.server_name,
        # Relative to where the command runs, not to where the config file lands.
        data_dir=os.path.abspath(args.data_dir),
        listen=args.listen,
        open_registration=args.open_registration,
        postgres_dsn=args.postgres,
        redis_url=args.redis,
        sync_workers=args.sync_workers,
        client_readers=args.client_readers,
        base_port=args.base_port,
    )
    # Validate before writing anything, exactly as the file will be loaded.
    import yaml

    from workers.config import parse_config

    config = parse_config(yaml.safe_load(text), base_dir=os.path.dirname(os.path.abspath(out)))
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    # The config holds secrets: readable by its owner only.
    tmp = f"{out}.tmp{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, out)
    print(f"wrote config {out}", file=sys.stderr)
    if write_signing_key(config.signing_key_path):
        print(f"wrote signing key {config.signing_key_path}", file=sys.stderr)
    else:
        print(f"kept existing signing key {config.signing_key_path}", file=sys.stderr)
    return EXIT_OK


def _cmd_run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    from workers.app import run_process

    return _exit_code(run_process(config, MAIN_PROCESS))


def _cmd_worker(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    name: str = args.name
    if name == MAIN_PROCESS:
        raise _UsageError("main is not a worker: start it with `ganglion run -c FILE`")
    if name not in {w.name for w in config.workers}:
        have = ", ".join(w.name for w in config.workers) or "none"
        raise ConfigError("workers", f"no worker named {name!r} is configured (have: {have})")
    from workers.app import run_process

    return _exit_code(run_process(config, name))


def _cmd_deploy(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    config_path = os.path.abspath(args.config)
    target: str = args.target
    if target == "nginx":
        from workers.deploy.nginx import render_nginx

        prefix = os.path.abspath(args.prefix) if args.prefix else None
        sys.stdout.write(render_nginx(config, full=not args.snippet, prefix=prefix))
    elif target == "prometheus":
        from workers.deploy.prometheus import render_prometheus

        sys.stdout.write(render_prometheus(config))
    elif target == "systemd":
        from workers.deploy.systemd import render_systemd_units

        units = render_systemd_units(
            config,
            exec_path=_exec_path(args.exec_path),
            config_path=config_path,
            user=args.user,
        )
        for i, (name, text) in enumerate(units.items()):
            if i:
                sys.stdout.write("\n")
            sys.stdout.write(f"### {name}\n{text}")
    else:
        from workers.deploy.processes import process_commands

        executable = args.exec_path or "ganglion"
        for name, argv in process_commands(config, config_path, executable=executable):
            sys.stdout.write(f"{name}\t{shlex.join(argv)}\n")
    return EXIT_OK


def _cmd_register_user(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    from workers.register_user import register_user_main

    return _exit_code(register_user_main(config, args))


def _cmd_check_config(args: argparse.Namespace) -> int:
    from workers.generate_config import load_signing_key

    config = load_config(args.config)
    key = load_signing_key(config.signing_key_path)
    print(describe_config(config))
    print(f"signing key: ed25519:{key.version} ({config.signing_key_path})")
    print("config OK")
    return EXIT_OK


# -- helpers ----------------------------------------------------------------


def describe_config(config: HomeserverConfig) -> str:
    db = config.database
    db_text = f"sqlite3 {db.sqlite_path}" if db.engine == "sqlite3" else "psycopg2"
    lines = [
        f"server_name: {config.server_name}",
        f"database: {db_text}",
        f"redis: {'enabled' if config.redis.enabled else 'disabled'}",
        "processes:",
    ]
    for p in config.processes:
        parts = [f"listen {p.listen}"]
        if p.metrics_listen:
            parts.append(f"metrics {p.metrics_listen}")
        if p.replication_listen:
            parts.append(f"replication {p.replication_listen}")
        lines.append(f"  {p.name} ({p.type}): {', '.join(parts)}")
    writers = ", ".join(f"{s} -> {w}" for s, w in config.stream_writers.items())
    lines.append(f"stream writers: {writers}")
    return "\n".join(lines)


def _exec_path(explicit: str | None) -> str:
    if explicit:
        return os.path.abspath(explicit)
    found = shutil.which("ganglion")
    if found:
        return os.path.abspath(found)
    argv0 = sys.argv[0] if sys.argv else ""
    if os.path.basename(argv0) == "ganglion" and os.path.exists(argv0):
        return os.path.abspath(argv0)
    return "/usr/local/bin/ganglion"


def _exit_code(result: object) -> int:
    return result if isinstance(result, int) and not isinstance(result, bool) else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
