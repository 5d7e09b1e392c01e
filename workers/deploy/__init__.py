"""Deployment artefacts derived from the one config file.

nginx (reverse proxy), Prometheus (scrape config), systemd (units) and the
process list are all rendered from a `HomeserverConfig`; none is kept by hand.
"""

from workers.deploy.nginx import render_nginx
from workers.deploy.processes import process_commands
from workers.deploy.prometheus import render_prometheus
from workers.deploy.systemd import render_systemd_units

__all__ = ["process_commands", "render_nginx", "render_prometheus", "render_systemd_units"]
