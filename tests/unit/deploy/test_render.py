"""nginx, Prometheus, systemd and process-list output derived from the config."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.harness.services import nginx_binary, require_service
from tests.unit.deploy.deploy_configs import make_config
from workers.deploy import (
    process_commands,
    render_nginx,
    render_prometheus,
    render_systemd_units,
)
from workers.deploy.nginx import proxy_read_timeout_s


def test_nginx_full_config_shape() -> None:
    config = make_config()
    text = render_nginx(config, prefix="/srv/ngx")
    assert "daemon off;" in text
    assert "worker_processes 1;" in text
    assert not re.search(r"^\s*user\s", text, re.M)
    for name in ("nginx.pid", "error.log", "access.log", "client_body_temp", "proxy_temp"):
        assert f"/srv/ngx/{name}" in text
    assert "upstream ganglion_main {\n        server 127.0.0.1:8008;" in text
    assert re.search(
        r"upstream ganglion_sync_by_user \{\s*hash \$ganglion_user consistent;\s*"
        r"server 127\.0\.0\.1:8011;\s*server 127\.0\.0\.1:8012;",
        text,
    )
    assert "client_max_body_size 65536;" in text
    assert "proxy_http_version 1.1;" in text
    assert "X-Forwarded-For $proxy_add_x_forwarded_for" in text
    assert "location ^~ /_ganglion/ {\n            return 404;" in text
    sync_block = text.split('location ~ "^/_matrix/client/(r0|v3|unstable)/sync$" {')[1]
    sync_block = sync_block.split("}")[0]
    assert "proxy_pass http://ganglion_sync_by_user;" in sync_block
    assert "proxy_buffering off;" in sync_block
    # Never route to the internal replication or metrics listeners.
    assert "9103" not in text and "9100" not in text


def test_nginx_relative_paths_without_prefix() -> None:
    text = render_nginx(make_config())
    assert "pid nginx.pid;" in text
    assert "error_log error.log warn;" in text


def test_proxy_read_timeout_exceeds_max_sync_timeout() -> None:
    config = make_config(max_sync_timeout_ms=120_500)
    assert proxy_read_timeout_s(config) > 120.5
    assert f"proxy_read_timeout {proxy_read_timeout_s(config)}s;" in render_nginx(config)


def test_nginx_snippet_is_http_level_only() -> None:
    text = render_nginx(make_config(), full=False)
    assert "daemon" not in text and "events" not in text and "http {" not in text
    assert "upstream ganglion_sync_by_user" in text and "server {" in text


def test_routes_fall_back_to_main_without_workers() -> None:
    text = render_nginx(make_config(sync_ports=()))
    assert "ganglion_sync" not in text
    sync_block = text.split('location ~ "^/_matrix/client/(r0|v3|unstable)/sync$" {')[1]
    assert "proxy_pass http://ganglion_main;" in sync_block.split("}")[0]


def test_wildcard_and_ipv6_backends() -> None:
    config = make_config(host="::1", proxy_port=8080)
    text = render_nginx(config)
    assert "server [::1]:8011;" in text
    assert "listen [::1]:8080;" in text


def _nginx_t(conf: Path, prefix: Path) -> None:
    nginx = nginx_binary()
    assert nginx is not None
    result = subprocess.run(
        [nginx, "-t", "-p", str(prefix), "-c", str(conf), "-e", "stderr"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


@pytest.mark.nginx
@pytest.mark.parametrize("sync_ports", [(), (8011,), (8011, 8012, 8013)])
@pytest.mark.parametrize("with_prefix", [True, False])
def test_nginx_accepts_full_config(
    tmp_path: Path, sync_ports: tuple[int, ...], with_prefix: bool
) -> None:
    require_service("nginx")
    prefix = tmp_path / "nginx"
    prefix.mkdir()
    conf = prefix / "nginx.conf"
    conf.write_text(
        render_nginx(
            make_config(sync_ports=sync_ports), prefix=str(prefix) if with_prefix else None
        )
    )
    _nginx_t(conf, prefix)


@pytest.mark.nginx
def test_nginx_accepts_generated_config(tmp_path: Path) -> None:
    """The full path: generate-config output -> load_config -> render -> nginx -t."""
    require_service("nginx")
    from workers.config import load_config
    from workers.generate_config import generate_config

    hs = tmp_path / "hs.yaml"
    hs.write_text(
        generate_config(
            "e.org", "d", postgres_dsn="dbname=g", redis_url="redis://127.0.0.1", sync_workers=2
        )
    )
    prefix = tmp_path / "nginx"
    prefix.mkdir()
    conf = prefix / "nginx.conf"
    conf.write_text(render_nginx(load_config(str(hs)), prefix=str(prefix)))
    _nginx_t(conf, prefix)


@pytest.mark.nginx
def test_nginx_accepts_snippet_in_http_block(tmp_path: Path) -> None:
    require_service("nginx")
    prefix = tmp_path / "nginx"
    prefix.mkdir()
    (prefix / "ganglion.conf").write_text(render_nginx(make_config(), full=False))
    conf = prefix / "nginx.conf"
    conf.write_text(
        "daemon off;\npid nginx.pid;\nerror_log error.log;\nevents {}\n"
        "http {\n"
        "    client_body_temp_path body; proxy_temp_path proxy; fastcgi_temp_path fcgi;\n"
        "    uwsgi_temp_path uwsgi; scgi_temp_path scgi; access_log off;\n"
        f"    include {prefix / 'ganglion.conf'};\n"
        "}\n"
    )
    _nginx_t(conf, prefix)


def test_prometheus_has_every_process() -> None:
    config = make_config(sync_ports=(8011, 8012, 8013))
    doc = yaml.safe_load(render_prometheus(config))
    (job,) = doc["scrape_configs"]
    targets = {sc["labels"]["worker"]: sc["targets"] for sc in job["static_configs"]}
    assert targets == {p.name: [str(p.metrics_listen)] for p in config.processes}
    assert set(targets) == {"main", "sync1", "sync2", "sync3"}


def test_prometheus_skips_processes_without_metrics() -> None:
    from workers.config import parse_config

    config = parse_config(
        {"server_name": "e.org", "data_dir": "/d", "main": {"listen": "127.0.0.1:8008"}},
        base_dir="/",
    )
    text = render_prometheus(config)
    assert yaml.safe_load(text)["scrape_configs"][0]["static_configs"] == []
    assert "not scraped): main" in text


def test_systemd_units_cover_every_process() -> None:
    config = make_config(sync_ports=(8011, 8012))
    units = render_systemd_units(
        config, exec_path="/opt/ganglion bin/ganglion", config_path="/etc/ganglion/hs.yaml"
    )
    assert set(units) == {"ganglion-main.service", "ganglion-worker@.service", "ganglion.target"}
    main = units["ganglion-main.service"]
    assert 'ExecStart="/opt/ganglion bin/ganglion" run -c /etc/ganglion/hs.yaml' in main
    assert "worker %i -c /etc/ganglion/hs.yaml" in units["ganglion-worker@.service"]
    target = units["ganglion.target"]
    for unit in (
        "ganglion-main.service",
        "ganglion-worker@sync1.service",
        "ganglion-worker@sync2.service",
    ):
        assert unit in target
    for text in units.values():
        assert "[Unit]" in text


def test_systemd_single_process_has_no_worker_template() -> None:
    units = render_systemd_units(
        make_config(sync_ports=()),
        exec_path="/usr/bin/ganglion",
        config_path="/etc/g.yaml",
        user="ganglion",
    )
    assert set(units) == {"ganglion-main.service", "ganglion.target"}
    assert "User=ganglion" in units["ganglion-main.service"]


def test_process_commands() -> None:
    config = make_config(sync_ports=(8011, 8012))
    assert process_commands(config, "/etc/g.yaml") == [
        ("main", ["ganglion", "run", "-c", "/etc/g.yaml"]),
        ("sync1", ["ganglion", "worker", "sync1", "-c", "/etc/g.yaml"]),
        ("sync2", ["ganglion", "worker", "sync2", "-c", "/etc/g.yaml"]),
    ]
