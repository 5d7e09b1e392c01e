"""Test harness: start real services (PostgreSQL, Redis, nginx) and Ganglion processes.

Modules:
    services  -- `require_service`, `in_ci`: fail in CI, skip elsewhere when a service is missing.
    ports     -- `free_port`.
    waiting   -- `wait_until`, `WaitTimeout`.
    postgres  -- `PostgresServer` (fresh, auto-dropped databases).
    redis     -- `RedisServer` (a private redis-server that can be stopped/restarted).
    nginx     -- `NginxServer`.
    ganglion  -- `GanglionProcess`, `Deployment`, `make_deployment_config`.
    matrix    -- raw HTTP helpers returning (status, json).
    fixtures  -- pytest fixtures, registered by tests/conftest.py.
"""
