"""`ganglion register-user`: create an account through the shared-secret admin API.

Talks HTTP to the running main process, as the tooling of other homeservers does, so it
works the same for a single process and for a scaled deployment.
"""

from __future__ import annotations

import argparse
import getpass
import hashlib
import hmac
import json
import sys
import urllib.error
import urllib.request
from typing import Any

from workers.config import HomeserverConfig


def _call(url: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method="POST" if body is not None else "GET")
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return dict(json.loads(resp.read()))
    except urllib.error.HTTPError as e:
        try:
            err = json.loads(e.read())
            raise SystemExit(
                f"ganglion: registration failed: {err.get('errcode')}: {err.get('error')}"
            ) from None
        except ValueError:
            raise SystemExit(f"ganglion: registration failed: HTTP {e.code}") from None
    except urllib.error.URLError as e:
        raise SystemExit(f"ganglion: cannot reach the server at {url}: {e.reason}") from None


def register_user_main(config: HomeserverConfig, args: argparse.Namespace) -> int:
    secret = config.registration_shared_secret
    if not secret:
        print("ganglion: registration_shared_secret is not set in the config", file=sys.stderr)
        return 2
    listen = config.main.listen
    if listen is None:
        print("ganglion: main.listen is not set in the config", file=sys.stderr)
        return 2
    host = listen.host if listen.host not in ("0.0.0.0", "::", "[::]") else "127.0.0.1"
    base = f"http://{host}:{listen.port}/_synapse/admin/v1/register"
    user = getattr(args, "user", None) or input("User name: ").strip()
    password = getattr(args, "password", None)
    if password is None:
        password = getpass.getpass("Password: ")
        if password != getpass.getpass("Confirm password: "):
            print("ganglion: passwords do not match", file=sys.stderr)
            return 1
    admin = bool(getattr(args, "admin", False))
    nonce = _call(base)["nonce"]
    mac = hmac.new(
        secret.encode(),
        "\x00".join([nonce, user, password, "admin" if admin else "notadmin"]).encode(),
        hashlib.sha1,
    ).hexdigest()
    result = _call(
        base, {"nonce": nonce, "username": user, "password": password, "admin": admin, "mac": mac}
    )
    print(f"registered {result['user_id']}")
    return 0
