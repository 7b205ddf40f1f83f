"""The test-only admin endpoint `lendnet chaos` uses to inject network faults into a
node's own links. Off unless the node's config says `"admin": true`; even then it answers
only requests from the loopback interface that carry the token in HOME/admin.token
(mode 0600, made at start), so nothing remote can switch a node's faults."""
from __future__ import annotations

import hmac
import ipaddress
import logging
import os
import secrets
from pathlib import Path

from aiohttp import web

from .linkfaults import LinkFaults

log = logging.getLogger("lendnet.node")

LIMITS = {"drop_pct": (0, 100), "dup_pct": (0, 100), "delay_ms": (0, 10_000),
          "jitter_ms": (0, 10_000), "seed": (0, 2**63 - 1)}


def make_token(home: Path) -> str:
    token = secrets.token_hex(16)
    path = home / "admin.token"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token


def check_spec(spec) -> str | None:
    """Why a faults body is not acceptable (None if it is)."""
    if type(spec) is not dict:
        return "body must be a JSON object"
    unknown = set(spec) - set(LIMITS) - {"block_peers", "block_keys"}
    if unknown:
        return f"unknown fields {sorted(unknown)}"
    for name, (lo, hi) in LIMITS.items():
        v = spec.get(name, 0)
        if type(v) is not int or not lo <= v <= hi:
            return f"{name} must be an integer from {lo} to {hi}"
    for name in ("block_peers", "block_keys"):
        v = spec.get(name, [])
        if type(v) is not list or len(v) > 64 or not all(type(x) is str and len(x) <= 128
                                                         for x in v):
            return f"{name} must be a list of at most 64 strings"
    for k in spec.get("block_keys", []):
        try:
            if len(bytes.fromhex(k)) != 32:
                raise ValueError
        except ValueError:
            return f"block_keys: {k!r} is not a 32-byte key in hex"
    return None


def add_admin_routes(app: web.Application, links: LinkFaults, token: str) -> None:
    """Let `lendnet chaos` read and set the faults of this node's links."""
    def allowed(request: web.Request) -> web.Response | None:
        try:
            loopback = ipaddress.ip_address(request.remote or "").is_loopback
        except ValueError:
            loopback = False
        given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if not loopback:
            return web.json_response({"error": "admin answers loopback only"}, status=403)
        if not hmac.compare_digest(given, token):
            return web.json_response({"error": "missing or wrong admin token"}, status=401)
        return None

    async def get_faults(request):
        return allowed(request) or web.json_response(links.to_json())

    async def set_faults(request):
        refused = allowed(request)
        if refused:
            return refused
        try:
            spec = await request.json()
        except (ValueError, UnicodeDecodeError, RecursionError):
            return web.json_response({"error": "body must be JSON"}, status=400)
        why = check_spec(spec)
        if why:
            return web.json_response({"error": why}, status=400)
        links.set(spec)
        log.warning("link faults set: %s", spec or "none")
        return web.json_response(links.to_json())

    app.router.add_get("/admin/faults", get_faults)
    app.router.add_post("/admin/faults", set_faults)
