"""`generate-config` output round-trips through load_config; the signing key; the CLI."""

from __future__ import annotations

import os
import stat
import sys
import types
from pathlib import Path
from typing import Any

import pytest
import yaml
from signedjson.key import get_verify_key
from signedjson.sign import sign_json, verify_signed_json

from workers import cli
from workers.config import ConfigError, ListenAddress, load_config, parse_config
from workers.generate_config import generate_config, load_signing_key, write_signing_key

PG = "host=127.0.0.1 dbname=ganglion user=ganglion"
REDIS = "redis://:s3cret@127.0.0.1:6380/3"


def _load_text(tmp_path: Path, text: str) -> Any:
    path = tmp_path / "homeserver.yaml"
    path.write_text(text)
    return load_config(str(path))


def test_single_process_sqlite_round_trip(tmp_path: Path) -> None:
    text = generate_config("example.org", "data")
    config = _load_text(tmp_path, text)
    assert config.server_name == "example.org"
    assert config.data_dir == str(tmp_path / "data")
    assert config.database.engine == "sqlite3"
    assert config.database.sqlite_path == str(tmp_path / "data" / "homeserver.db")
    assert config.signing_key_path == str(tmp_path / "data" / "example.org.signing.key")
    assert not config.is_multi_process
    assert config.main.listen == ListenAddress("127.0.0.1", 8008)
    assert config.main.metrics_listen is not None
    assert config.enable_registration is False
    assert config.registration_shared_secret and config.replication_secret


def test_every_key_is_commented() -> None:
    text = generate_config(
        "example.org", "/var/lib/ganglion", postgres_dsn=PG, redis_url=REDIS, sync_workers=1
    )
    lines = text.splitlines()
    # Each top-level key is preceded by a comment line.
    for i, line in enumerate(lines):
        if line and not line.startswith((" ", "#")):
            assert lines[i - 1].startswith("#"), f"no comment above {line!r}"


def test_secrets_are_random() -> None:
    a = yaml.safe_load(generate_config("example.org", "d"))
    b = yaml.safe_load(generate_config("example.org", "d"))
    assert a["replication_secret"] != b["replication_secret"]
    assert a["registration_shared_secret"] != b["registration_shared_secret"]
    assert len(a["replication_secret"]) >= 32


def test_open_registration_and_listen() -> None:
    data = yaml.safe_load(
        generate_config("example.org", "d", listen="[::1]:9008", open_registration=True)
    )
    config = parse_config(data, base_dir="/")
    assert config.enable_registration is True
    assert config.main.listen == ListenAddress("::1", 9008)


def test_multi_process_round_trip(tmp_path: Path) -> None:
    text = generate_config(
        "example.org",
        "data",
        listen="127.0.0.1:8008",
        postgres_dsn=PG,
        redis_url=REDIS,
        sync_workers=2,
    )
    config = _load_text(tmp_path, text)
    assert config.is_multi_process
    assert config.database.engine == "psycopg2" and config.database.postgres_dsn == PG
    assert (config.redis.enabled, config.redis.host, config.redis.port) == (True, "127.0.0.1", 6380)
    assert (config.redis.dbid, config.redis.password) == (3, "s3cret")
    assert [(w.name, w.type) for w in config.workers] == [("sync1", "sync"), ("sync2", "sync")]
    # Workers on consecutive ports after main's.
    assert [w.listen for w in config.workers] == [
        ListenAddress("127.0.0.1", 8009),
        ListenAddress("127.0.0.1", 8010),
    ]
    assert all(p.metrics_listen is not None for p in config.processes)
    assert config.main.replication_listen is not None
    ports = [
        a.port
        for p in config.processes
        for a in (p.listen, p.metrics_listen, p.replication_listen)
        if a is not None
    ] + [config.proxy.listen.port]
    assert len(ports) == len(set(ports))
    assert config.public_baseurl == f"http://{config.proxy.listen}/"


def test_base_port_moves_internal_listeners() -> None:
    data = yaml.safe_load(
        generate_config(
            "e.org", "d", postgres_dsn=PG, redis_url=REDIS, sync_workers=2, base_port=20000
        )
    )
    config = parse_config(data, base_dir="/")
    assert config.main.metrics_listen == ListenAddress("127.0.0.1", 20000)
    assert [w.metrics_listen.port for w in config.workers if w.metrics_listen] == [20001, 20002]
    assert config.main.replication_listen == ListenAddress("127.0.0.1", 20003)
    assert config.proxy.listen == ListenAddress("127.0.0.1", 20004)


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"sync_workers": 1}, "sync_workers"),
        ({"sync_workers": 1, "postgres_dsn": PG}, "sync_workers"),
        ({"sync_workers": -1}, "sync_workers"),
        ({"listen": "nope"}, "listen"),
        ({"redis_url": "http://x"}, "redis_url"),
        ({"listen": "127.0.0.1:65535"}, "listen"),
    ],
)
def test_generate_config_rejects(kwargs: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        generate_config("e.org", "d", **kwargs)
    assert info.value.key == key


def test_signing_key_written_0600_and_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "k.key"
    assert write_signing_key(str(path)) is True
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    content = path.read_text()
    alg, version, seed = content.split()
    assert alg == "ed25519" and version.startswith("a_") and len(seed) == 43
    assert write_signing_key(str(path)) is False
    assert path.read_text() == content

    key = load_signing_key(str(path))
    assert key.version == version
    signed = sign_json({"a": 1}, "e.org", key)
    verify_signed_json(signed, "e.org", get_verify_key(key))


def test_load_signing_key_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_signing_key(str(tmp_path / "missing"))
    assert info.value.key == "signing_key_path"
    bad = tmp_path / "bad.key"
    bad.write_text("ed25519 a_x not-base64!!\n")
    with pytest.raises(ConfigError):
        load_signing_key(str(bad))
    empty = tmp_path / "empty.key"
    empty.write_text("")
    with pytest.raises(ConfigError):
        load_signing_key(str(empty))


# -- CLI --------------------------------------------------------------------


def test_cli_generate_config_single(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A relative --data-dir is relative to where the command runs.
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "hs.yaml"
    rc = cli.main(
        ["generate-config", "--server-name", "e.org", "--data-dir", "data", "-o", str(out)]
    )
    assert rc == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    config = load_config(str(out))
    assert config.data_dir == str(tmp_path / "data")
    assert os.path.exists(config.signing_key_path)
    key_text = Path(config.signing_key_path).read_text()

    # Refuses to overwrite without --force.
    before = out.read_text()
    rc = cli.main(
        ["generate-config", "--server-name", "e.org", "--data-dir", "data", "-o", str(out)]
    )
    assert rc != 0
    assert "--force" in capsys.readouterr().err
    assert out.read_text() == before

    # --force rewrites the config but keeps the existing signing key.
    rc = cli.main(
        [
            "generate-config",
            "--server-name",
            "e.org",
            "--data-dir",
            "data",
            "-o",
            str(out),
            "--force",
        ]
    )
    assert rc == 0
    assert out.read_text() != before
    assert Path(config.signing_key_path).read_text() == key_text

    assert cli.main(["check-config", "-c", str(out)]) == 0
    assert "config OK" in capsys.readouterr().out


def test_cli_generate_config_multi(tmp_path: Path) -> None:
    out = tmp_path / "hs.yaml"
    rc = cli.main(
        [
            "generate-config",
            "--server-name",
            "e.org",
            "--data-dir",
            str(tmp_path / "d"),
            "--listen",
            "127.0.0.1:18008",
            "--postgres",
            PG,
            "--redis",
            REDIS,
            "--sync-workers",
            "2",
            "-o",
            str(out),
        ]
    )
    assert rc == 0
    config = load_config(str(out))
    assert [w.name for w in config.workers] == ["sync1", "sync2"]
    assert config.main.listen == ListenAddress("127.0.0.1", 18008)


def test_cli_config_error_exit_2_no_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "hs.yaml"
    path.write_text(
        "server_name: e.org\ndata_dir: d\nworkers:\n  sync1: {type: sync, listen: abc}\n"
    )
    assert cli.main(["check-config", "-c", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.strip() == (
        "ganglion: config error: workers.sync1.listen: expected HOST:PORT, got 'abc'"
    )
    assert "Traceback" not in err

    assert (
        cli.main(
            [
                "generate-config",
                "--server-name",
                "e.org",
                "--data-dir",
                "d",
                "--sync-workers",
                "2",
                "-o",
                str(tmp_path / "x.yaml"),
            ]
        )
        == 2
    )
    assert capsys.readouterr().err.startswith("ganglion: config error: sync_workers: ")
    assert not (tmp_path / "x.yaml").exists()


def test_cli_check_config_needs_signing_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "hs.yaml"
    path.write_text(generate_config("e.org", "d"))
    assert cli.main(["check-config", "-c", str(path)]) == 2
    assert "signing_key_path" in capsys.readouterr().err


@pytest.fixture
def generated(tmp_path: Path) -> Path:
    out = tmp_path / "hs.yaml"
    assert (
        cli.main(
            [
                "generate-config",
                "--server-name",
                "e.org",
                "--data-dir",
                "d",
                "--postgres",
                PG,
                "--redis",
                REDIS,
                "--sync-workers",
                "2",
                "-o",
                str(out),
            ]
        )
        == 0
    )
    return out


def test_cli_run_and_worker_dispatch(
    generated: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    calls: list[tuple[str, str]] = []

    def run_process(config: Any, name: str) -> int:
        calls.append((config.server_name, name))
        return 0

    fake = types.ModuleType("workers.app")
    fake.run_process = run_process  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "workers.app", fake)

    assert cli.main(["run", "-c", str(generated)]) == 0
    assert cli.main(["worker", "sync2", "-c", str(generated)]) == 0
    assert calls == [("e.org", "main"), ("e.org", "sync2")]

    assert cli.main(["worker", "sync9", "-c", str(generated)]) == 2
    assert "no worker named 'sync9'" in capsys.readouterr().err
    assert cli.main(["worker", "main", "-c", str(generated)]) == 2
    assert len(calls) == 2


def test_cli_register_user_dispatch(generated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def register_user_main(config: Any, args: Any) -> int:
        seen.update(user=args.user, password=args.password, admin=args.admin)
        return 7

    fake = types.ModuleType("workers.register_user")
    fake.register_user_main = register_user_main  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "workers.register_user", fake)
    rc = cli.main(
        ["register-user", "-c", str(generated), "--user", "alice", "--password", "pw", "--admin"]
    )
    assert rc == 7
    assert seen == {"user": "alice", "password": "pw", "admin": True}
    cli.main(["register-user", "-c", str(generated), "--no-admin"])
    assert seen == {"user": None, "password": None, "admin": False}


def test_cli_deploy_outputs(generated: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["deploy", "processes", "-c", str(generated)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [
        f"main\tganglion run -c {generated}",
        f"sync1\tganglion worker sync1 -c {generated}",
        f"sync2\tganglion worker sync2 -c {generated}",
    ]
    assert cli.main(["deploy", "nginx", "-c", str(generated), "--prefix", "/tmp/px"]) == 0
    text = capsys.readouterr().out
    assert "daemon off;" in text and "/tmp/px/nginx.pid" in text
    assert cli.main(["deploy", "nginx", "-c", str(generated), "--snippet"]) == 0
    assert "daemon" not in capsys.readouterr().out
    assert cli.main(["deploy", "prometheus", "-c", str(generated)]) == 0
    assert "worker: sync2" in capsys.readouterr().out
    assert (
        cli.main(["deploy", "systemd", "-c", str(generated), "--exec-path", "/opt/g/ganglion"]) == 0
    )
    text = capsys.readouterr().out
    assert "### ganglion.target" in text and "/opt/g/ganglion worker %i" in text


def test_generated_config_lists_every_limit(tmp_path: Path) -> None:
    """The one config file documents every limit, at its default."""
    import attrs

    from workers.config import LimitsConfig

    raw = yaml.safe_load(generate_config("example.org", str(tmp_path)))
    defaults = LimitsConfig()
    assert raw["limits"] == {f.name: getattr(defaults, f.name) for f in attrs.fields(LimitsConfig)}
