"""Shared helpers for the serve tests: one real tiny model per test process, and live uvicorn
servers on 127.0.0.1 (random free port) in a thread of the test process.

Why a thread, not a subprocess: loading the model costs seconds on a shared 2-core box; every
server in the session reuses the one loaded generator. The server is the real thing -- uvicorn,
sockets, the batcher's worker thread -- so clients talk HTTP to it exactly as in production.
"""
from __future__ import annotations

import atexit
import functools
import shutil
import socket
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import httpx

from blinkgen.serve.app import ServeConfig, create_app
from blinkgen.serve.commands import make_server
from blinkgen.serve.schemas import Limits

STEPS = 2  # keep every generation cheap: the tiny model on 2 shared cores
SLOW_STEPS = 30  # long enough that progress is seen before the end, even on a fast idle machine
LONG = {"n": 10, "steps": 500}  # a request that surely outlives sub-second timeouts and hang-ups


@functools.lru_cache(maxsize=1)
def tiny_generator():
    """The real tiny diffusion model, built and loaded once per process."""
    import blinkgen
    from blinkgen.families import get

    tmp = tempfile.mkdtemp(prefix="blinkgen-serve-test-")
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)  # the model lives as long as the process
    folder = Path(tmp) / "tiny"
    get("diffusion").make_tiny(folder)
    return blinkgen.load(str(folder))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Live:
    def __init__(self, app, server, thread, base_url):
        self.app, self.server, self.thread, self.base_url = app, server, thread, base_url
        self.service = app.state.service
        self.client = httpx.Client(base_url=base_url, timeout=60)

    @property
    def model(self) -> str:
        return next(iter(self.service.generators))

    @property
    def size(self) -> str:
        gen = next(iter(self.service.generators.values()))
        return f"{gen.image_size}x{gen.image_size}"

    def wait_job(self, job_id: str, states=("done", "failed", "cancelled"), timeout: float = 60.0,
                 headers=None) -> dict:
        t = time.monotonic() + timeout
        while time.monotonic() < t:
            j = self.client.get(f"/v1/jobs/{job_id}", headers=headers).json()
            if j["state"] in states:
                return j
            time.sleep(0.05)
        raise AssertionError(f"job {job_id} not in {states} after {timeout}s: {j}")

    def stop(self, timeout: float = 30.0) -> None:
        """Stop as SIGTERM would: drain with the configured grace, then exit."""
        import signal

        self.server.handle_exit(signal.SIGTERM, None)
        self.thread.join(timeout)
        self.client.close()


@contextmanager
def live_server(gens: dict | None = None, wait_ready: bool = True, **config):
    limits = config.pop("limits", Limits())
    config.setdefault("warmup", False)
    cfg = ServeConfig(limits=limits, **config)
    gens = gens or {"tiny": tiny_generator()}
    app = create_app(gens, cfg)
    port = free_port()
    server = make_server(app, "127.0.0.1", port, "warning", cfg.shutdown_grace_s)
    thread = threading.Thread(target=server.run, daemon=True, name=f"uvicorn-{port}")
    thread.start()
    live = Live(app, server, thread, f"http://127.0.0.1:{port}")
    deadline = time.monotonic() + 60
    while True:
        try:
            r = live.client.get("/ready" if wait_ready else "/health")
            if r.status_code == 200:
                break
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("test server did not become ready")
        time.sleep(0.05)
    try:
        yield live
    finally:
        if thread.is_alive():
            live.stop()
