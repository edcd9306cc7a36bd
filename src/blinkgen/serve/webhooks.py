"""Webhooks: an HTTP POST to the job's `webhook_url` once the job reaches a final state (done,
failed, cancelled), signed, retried, and sent only where the operator allows.

Who may be called: loopback addresses (127.0.0.0/8, ::1, "localhost") and the hosts the server was
started with (`--webhook-host`, exact names, case-insensitive); any other URL is refused when the
job is submitted (400, code `webhook_host_not_allowed`), so a client cannot make the server call
into a network it can reach and they cannot. No proxy is used and redirects are not followed (a
redirect could lead anywhere).

Signature (after: the Stripe / GitHub webhook conventions): the body is the job as
`GET /v1/jobs/{id}` shows it (images as url links), under {"type": "job.finished", "job": ...}.
Headers:
    X-Blinkgen-Delivery: <id>            the same on every retry of one delivery (dedupe on it)
    X-Blinkgen-Timestamp: <unix seconds> when this attempt was signed
    X-Blinkgen-Signature: sha256=<hex>   HMAC-SHA256(secret, "<timestamp>." + body bytes)
The secret is the server's `--webhook-secret-file` (first line); a receiver recomputes the HMAC
over the raw body, compares in constant time, and may refuse old timestamps (replays).

Retries: a connection error, a timeout, a 429 or a 5xx is retried after 0.5, 1, 2, 4 ... seconds
(doubling, at most RETRY_ATTEMPTS attempts in all); any 2xx ends the delivery (delivered once);
another status (a 4xx: the receiver refuses it) ends it without retry. One daemon thread sends
every delivery, so a slow receiver never holds up generation.
"""
from __future__ import annotations

import hashlib
import heapq
import hmac
import ipaddress
import json
import logging
import secrets
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from .schemas import UserError

log = logging.getLogger(__name__)

RETRY_ATTEMPTS = 6
FIRST_BACKOFF_S = 0.5
TIMEOUT_S = 10.0
EVENT = "job.finished"


@dataclass(frozen=True)
class Webhook:
    url: str
    base_url: str  # the server's address as the client used it (for image links in the body)


def check_url(url: str, allowed_hosts: frozenset[str]) -> str:
    """The URL if the server may call it, else UserError (400) saying why and what is allowed."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        host, parts = None, None
    if parts is None or parts.scheme not in ("http", "https") or not host:
        raise UserError("webhook_url must be an http(s) URL with a host", param="webhook_url",
                        code="invalid_webhook_url")
    if parts.username or parts.password:
        raise UserError("webhook_url must not carry credentials", param="webhook_url", code="invalid_webhook_url")
    if _loopback(host) or host.lower() in allowed_hosts:
        return url
    extra = f" and {', '.join(sorted(allowed_hosts))}" if allowed_hosts else ""
    raise UserError(f"webhook host {host!r} is not allowed: this server calls back only loopback addresses"
                    f"{extra} (an operator adds hosts with --webhook-host)", param="webhook_url",
                    code="webhook_host_not_allowed")


def _loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    """The X-Blinkgen-Signature value: "sha256=" + hex HMAC-SHA256(secret, timestamp + "." + body)."""
    return "sha256=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def verify(secret: bytes, timestamp: str, body: bytes, signature: str) -> bool:
    """What a receiver does (constant-time compare); used by the tests."""
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # a redirect could point anywhere: never follow
        return None


@dataclass(order=True)
class _Delivery:
    due: float
    seq: int
    url: str = field(compare=False)
    body: bytes = field(compare=False)
    id: str = field(compare=False)
    attempt: int = field(default=0, compare=False)


class Dispatcher:
    """Sends deliveries from one daemon thread; `submit` only enqueues (callable under any lock)."""

    def __init__(self, secret: bytes, attempts: int = RETRY_ATTEMPTS, first_backoff_s: float = FIRST_BACKOFF_S,
                 timeout_s: float = TIMEOUT_S):
        self.secret, self.attempts = secret, attempts
        self.first_backoff_s, self.timeout_s = first_backoff_s, timeout_s
        self._heap: list[_Delivery] = []
        self._cond = threading.Condition()
        self._seq = 0
        self._closed = False
        self._deadline = float("inf")
        self.stats = {"delivered": 0, "failed": 0, "retried": 0}
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())
        self._thread = threading.Thread(target=self._run, name="blinkgen-webhooks", daemon=True)
        self._thread.start()

    def submit(self, url: str, payload: dict) -> str:
        body = json.dumps(payload, separators=(",", ":")).encode()
        d = _Delivery(time.monotonic(), 0, url, body, "dlv_" + secrets.token_hex(12))
        with self._cond:
            self._seq += 1
            d.seq = self._seq
            heapq.heappush(self._heap, d)
            self._cond.notify()
        return d.id

    def close(self, timeout: float = 5.0) -> None:
        """Stop after sending what is due within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._closed = True
            self._deadline = deadline
            self._cond.notify()
        self._thread.join(max(0.0, deadline - time.monotonic()) + 1.0)

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    now = time.monotonic()
                    if self._closed and (not self._heap or now > self._deadline):
                        return
                    if self._heap and self._heap[0].due <= now:
                        d = heapq.heappop(self._heap)
                        break
                    wait = (self._heap[0].due - now) if self._heap else None
                    self._cond.wait(wait if wait is None else max(wait, 0.0))
            self._attempt(d)

    def _attempt(self, d: _Delivery) -> None:
        d.attempt += 1
        ts = str(int(time.time()))
        req = urllib.request.Request(d.url, data=d.body, method="POST", headers={
            "Content-Type": "application/json", "User-Agent": "blinkgen-webhooks",
            "X-Blinkgen-Event": EVENT, "X-Blinkgen-Delivery": d.id, "X-Blinkgen-Timestamp": ts,
            "X-Blinkgen-Signature": sign(self.secret, ts, d.body)})
        retry, why = False, ""
        try:
            with self._opener.open(req, timeout=self.timeout_s) as r:
                status = r.status
        except urllib.error.HTTPError as e:
            status = e.code
        except (urllib.error.URLError, OSError) as e:  # refused, reset, timeout, DNS
            status, retry, why = None, True, str(getattr(e, "reason", e))
        if status is not None:
            if 200 <= status < 300:
                self.stats["delivered"] += 1
                log.info("webhook %s delivered to %s (attempt %d)", d.id, d.url, d.attempt)
                return
            retry, why = status == 429 or status >= 500, f"HTTP {status}"
        if retry and d.attempt < self.attempts:
            self.stats["retried"] += 1
            d.due = time.monotonic() + self.first_backoff_s * 2 ** (d.attempt - 1)
            log.warning("webhook %s to %s failed (%s); retry %d in %.1f s", d.id, d.url, why, d.attempt,
                        d.due - time.monotonic())
            with self._cond:
                heapq.heappush(self._heap, d)
                self._cond.notify()
            return
        self.stats["failed"] += 1
        log.warning("webhook %s to %s given up after %d attempt(s): %s", d.id, d.url, d.attempt, why)


def load_secret(path) -> bytes:
    """The first non-empty line of the secret file (textio), at least 16 characters."""
    from ..errors import UserInputError
    from ..textio import read_lines

    lines = read_lines(path, "--webhook-secret-file")
    if not lines or len(lines[0]) < 16:
        raise UserInputError(f"--webhook-secret-file {path} must hold a secret of at least 16 characters")
    return lines[0].encode()
