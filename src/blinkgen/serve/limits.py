"""Guards in front of the routes: API keys, a body-size cap, and per-request metrics.

The body cap is plain ASGI middleware rather than a route check because it must act before the
JSON parser reads an unbounded body into memory; chunked bodies (no Content-Length) are counted
as they arrive and cut off at the cap.
"""
from __future__ import annotations

import hmac
import json
import os
import time

from ..textio import read_text
from .metrics import Metrics

ENV_KEYS = "BLINKGEN_API_KEYS"  # comma-separated keys; joins the keys from --api-key-file


def load_api_keys(path: str | os.PathLike | None = None, env: dict | None = None) -> frozenset[str]:
    """Keys from a file (one per line, `#` comments) and from $BLINKGEN_API_KEYS. Empty: no auth."""
    env = os.environ if env is None else env
    keys = {k.strip() for k in env.get(ENV_KEYS, "").split(",") if k.strip()}
    if path:
        for line in read_text(path, "--api-key-file").split("\n"):
            line = line.split("#", 1)[0].strip()
            if line:
                keys.add(line)
    return frozenset(keys)


def bearer_token(authorization: str | None) -> str | None:
    """The key in an `Authorization: Bearer <key>` header (scheme case-insensitive), or None."""
    if not authorization or not authorization.lower().startswith("bearer "):
        return None
    return authorization[7:].strip()


def key_ok(keys: frozenset[str], authorization: str | None) -> bool:
    """Bearer check in constant time per key, so response timing does not leak key prefixes."""
    if not keys:
        return True
    token = bearer_token(authorization)
    if token is None:
        return False
    given = token.encode()
    ok = False
    for k in keys:
        ok |= hmac.compare_digest(given, k.encode())
    return ok


def error_body(message: str, type: str, code: str | None = None, param: str | None = None) -> bytes:
    return json.dumps({"error": {"message": message, "type": type, "param": param, "code": code}}).encode()


class BodyLimit:
    """Reject request bodies over `max_bytes` with 413 before anything parses them."""

    def __init__(self, app, max_bytes: int, paths: dict[str, int] | None = None):
        """max_bytes: the cap; paths: exact request paths with their own cap (the uploads)."""
        self.app, self.max_bytes, self.paths = app, max_bytes, dict(paths or {})

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        cap = self.paths.get(scope.get("path", ""), self.max_bytes)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        try:
            too_big = declared is not None and int(declared) > cap
        except ValueError:
            return await self._reject(send, 400, "invalid Content-Length header", "invalid_request_error", "bad_header")
        if too_big:
            return await self._reject(send, 413, f"request body over {cap} bytes",
                                      "invalid_request_error", "body_too_large")
        # Read the whole (bounded) body here, then replay it: chunked bodies are capped too.
        body, more = b"", True
        while more:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            body += msg.get("body", b"")
            more = msg.get("more_body", False)
            if len(body) > cap:
                return await self._reject(send, 413, f"request body over {cap} bytes",
                                          "invalid_request_error", "body_too_large")
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    @staticmethod
    async def _reject(send, status: int, message: str, type: str, code: str):
        body = error_body(message, type, code)
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()), (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


class RequestMetrics:
    """Count requests and time them by route template (never by raw path: bounded label set)."""

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        status = [500]

        async def send_wrapper(msg):
            if msg["type"] == "http.response.start":
                status[0] = msg["status"]
            await send(msg)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or "unmatched"
            self.metrics.observe_request(endpoint, status[0], time.perf_counter() - t0)
