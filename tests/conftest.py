"""Shared pytest setup: the repo root is importable and the harness fixtures are registered.

Fixtures (see tests/harness/fixtures.py): pg_admin_dsn, pg_server, pg_dsn,
redis_server, nginx_factory, ganglion_factory, deployment_factory, deployment, and
`single` (one process on SQLite per module; tests/harness/single.py for custom configs).
Markers postgres/redis/nginx make a test require that service (fail in CI,
skip elsewhere).
"""

from __future__ import annotations

import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from hypothesis import HealthCheck, settings  # noqa: E402

from tests.harness.fixtures import *  # noqa: E402,F403

# Property tests judge results, not speed: on a loaded CI machine a per-example deadline
# or a "too slow" health check would fail a correct run. Examples stay random;
# a failure still prints its shrunk example and how to reproduce it.
settings.register_profile("ganglion", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ganglion")
