"""Everyday generation on the live server (issue 16): the negative prompt through the official
OpenAI client, job priority, signed webhooks with retries, and models loaded and unloaded while
jobs run -- losing none."""
from __future__ import annotations

import base64
import io
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from PIL import Image

from blinkgen.pngmeta import parameters_from_bytes
from blinkgen.serve.webhooks import verify
from conftest_serve import LONG, STEPS, free_port, live_server

openai = pytest.importorskip("openai")
SECRET = b"a-test-secret-of-32-characters!!"
ADMIN = "admin-key-for-tests"


def test_negative_prompt_through_the_openai_client_and_jobs():
    with live_server() as srv:
        client = openai.OpenAI(base_url=srv.base_url + "/v1", api_key="unused", max_retries=0)
        common = dict(prompt="a red circle", size=srv.size, response_format="b64_json")
        plain = client.images.generate(**common, extra_body={"seed": 3, "steps": STEPS, "guidance": 3.0})
        neg = client.images.generate(**common, extra_body={"seed": 3, "steps": STEPS, "guidance": 3.0,
                                                           "negative_prompt": "red"})
        a, b = (base64.b64decode(r.data[0].b64_json) for r in (plain, neg))
        assert not np.array_equal(np.asarray(Image.open(io.BytesIO(a))), np.asarray(Image.open(io.BytesIO(b))))
        assert parameters_from_bytes(b)["negative_prompt"] == "red" and "negative_prompt" not in parameters_from_bytes(a)
        job = srv.client.post("/v1/jobs", json={"prompt": "a red circle", "steps": STEPS, "negative_prompt": "red"}).json()
        assert job["settings"]["negative_prompt"] == "red"
        assert srv.wait_job(job["id"])["state"] == "done"
        with pytest.raises(openai.BadRequestError) as e:
            client.images.generate(**common, extra_body={"negative_prompt": "x" * 5000})
        assert "negative_prompt" in str(e.value)


def test_priority_runs_first_without_starving():
    with live_server(max_batch=1) as srv:
        c = srv.client
        blocker = c.post("/v1/jobs", json={"prompt": "a long job", **LONG}).json()
        srv.wait_job(blocker["id"], states=("running",))
        low = c.post("/v1/jobs", json={"prompt": "low", "steps": STEPS, "priority": -5}).json()
        mid = c.post("/v1/jobs", json={"prompt": "default", "steps": STEPS}).json()
        high = c.post("/v1/jobs", json={"prompt": "high", "steps": STEPS, "priority": 5}).json()
        pos = {k: c.get(f"/v1/jobs/{j['id']}").json()["queue_position"] for k, j in
               (("low", low), ("mid", mid), ("high", high))}
        # the blocker's 9 remaining images wait too: they go after the jobs that arrived while its
        # image ran (round-robin: without that, mid would wait for all 9), before the lower priority
        assert pos == {"high": 0, "mid": 1, "low": 3}, pos
        assert c.get(f"/v1/jobs/{high['id']}").json()["priority"] == 5
        c.delete(f"/v1/jobs/{blocker['id']}")
        done = [srv.wait_job(j["id"]) for j in (high, mid, low)]
        assert all(d["state"] == "done" for d in done)
        bad = c.post("/v1/jobs", json={"prompt": "x", "priority": 11})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "priority"


class Receiver:
    """A webhook receiver on 127.0.0.1 recording (headers, body) of every POST."""

    def __init__(self, port: int | None = None, status: int = 200):
        self.hits: list[tuple[dict, bytes]] = []
        outer = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.hits.append((dict(self.headers), body))
                self.send_response(status)
                self.end_headers()

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port or 0), H)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def wait_for(cond, timeout=60.0, what="condition"):
    t = time.monotonic() + timeout
    while time.monotonic() < t:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def check_signed(headers: dict, body: bytes) -> dict:
    assert verify(SECRET, headers["X-Blinkgen-Timestamp"], body, headers["X-Blinkgen-Signature"])
    assert not verify(b"another secret, 16+ chars", headers["X-Blinkgen-Timestamp"], body,
                      headers["X-Blinkgen-Signature"])
    return json.loads(body)


def test_webhook_signed_once_and_retried_after_a_refused_connection():
    rx = Receiver()
    try:
        with live_server(webhook_secret=SECRET) as srv:
            c = srv.client
            job = c.post("/v1/jobs", json={"prompt": "a blue square", "steps": STEPS, "n": 2,
                                           "webhook_url": f"http://127.0.0.1:{rx.port}/hook"}).json()
            assert srv.wait_job(job["id"])["state"] == "done"
            wait_for(lambda: rx.hits, what="the webhook")
            time.sleep(1.0)  # a second delivery would have come by now
            assert len(rx.hits) == 1
            headers, body = rx.hits[0]
            payload = check_signed(headers, body)
            assert payload["type"] == "job.finished" and payload["job"]["id"] == job["id"]
            assert payload["job"]["state"] == "done" and len(payload["job"]["data"]) == 2
            png = c.get(payload["job"]["data"][0]["url"])  # the links in the body work
            assert png.status_code == 200 and png.content.startswith(b"\x89PNG")

            # nothing listens on this port yet: the first attempt is refused, a retry delivers
            port = free_port()
            wh = srv.service.webhooks
            retried = wh.stats["retried"]
            job2 = c.post("/v1/jobs", json={"prompt": "x", "steps": STEPS,
                                            "webhook_url": f"http://localhost:{port}/late"}).json()
            assert srv.wait_job(job2["id"])["state"] == "done"
            wait_for(lambda: wh.stats["retried"] > retried, what="a refused first attempt")
            late = Receiver(port)
            try:
                wait_for(lambda: late.hits, what="the retried webhook")
                time.sleep(0.5)
                assert len(late.hits) == 1
                assert check_signed(*late.hits[0])["job"]["id"] == job2["id"]
            finally:
                late.close()

            for url, code in (("http://example.com/hook", "webhook_host_not_allowed"),
                              ("http://10.0.0.1/hook", "webhook_host_not_allowed"),
                              ("ftp://127.0.0.1/x", "invalid_webhook_url")):
                r = c.post("/v1/jobs", json={"prompt": "x", "webhook_url": url})
                assert r.status_code == 400 and r.json()["error"]["code"] == code, r.text
            assert "--webhook-host" in c.post("/v1/jobs", json={"prompt": "x", "webhook_url": "http://example.com/"}).text
            r = c.post("/v1/images/generations", json={"prompt": "x", "webhook_url": f"http://127.0.0.1:{rx.port}/"})
            assert r.status_code == 400 and r.json()["error"]["param"] == "webhook_url"
        with live_server() as srv:  # no secret: no webhooks
            r = srv.client.post("/v1/jobs", json={"prompt": "x", "webhook_url": f"http://127.0.0.1:{rx.port}/"})
            assert r.status_code == 400 and r.json()["error"]["code"] == "webhooks_disabled"
    finally:
        rx.close()


def test_load_and_unload_under_load_lose_no_job(tmp_path):
    from blinkgen.families import get

    second = get("diffusion").make_tiny(tmp_path / "second", seed=3)
    admin = {"Authorization": f"Bearer {ADMIN}"}
    with live_server(admin_keys=frozenset({ADMIN}), max_batch=4) as srv:
        c = srv.client
        assert c.post("/v1/models/load", json={"model": str(second)}).status_code == 401
        assert c.post("/v1/models/load", json={"model": str(second)},
                      headers={"Authorization": "Bearer nope"}).status_code == 403
        r = c.post("/v1/models/load", json={"model": str(second), "id": "second"}, headers=admin)
        assert r.status_code == 201 and r.json()["id"] == "second", r.text
        assert {m["id"] for m in c.get("/v1/models").json()["data"]} == {srv.model, "second"}
        bad = c.post("/v1/models/load", json={"model": str(tmp_path / "missing")}, headers=admin)
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "model_load_failed"

        accepted, refused, stop = [], [], threading.Event()

        def client_loop(model):
            import httpx

            with httpx.Client(base_url=srv.base_url, timeout=60) as h:
                while not stop.is_set():
                    r = h.post("/v1/jobs", json={"prompt": "a red circle", "steps": STEPS, "model": model})
                    if r.status_code == 202:
                        accepted.append(r.json()["id"])
                    else:
                        assert r.status_code == 400 and r.json()["error"]["code"] == "model_not_found", r.text
                        refused.append(model)
                    time.sleep(0.02)

        threads = [threading.Thread(target=client_loop, args=(m,)) for m in ("second", "second", srv.model)]
        for t in threads:
            t.start()
        wait_for(lambda: len(accepted) >= 6, what="jobs under load")
        r = c.delete("/v1/models/second", headers=admin, timeout=120)
        assert r.status_code == 200 and r.json()["deleted"] is True, r.text
        time.sleep(0.3)  # the clients keep asking for the unloaded model meanwhile
        stop.set()
        for t in threads:
            t.join(60)
        states = [srv.wait_job(j, timeout=120)["state"] for j in accepted]
        assert states.count("done") == len(accepted), states  # every accepted job finished
        assert "second" in refused  # requests after the unload get a clear error, not a lost job
        assert [m["id"] for m in c.get("/v1/models").json()["data"]] == [srv.model]
        last = c.delete(f"/v1/models/{srv.model}", headers=admin)
        assert last.status_code == 409 and last.json()["error"]["code"] == "last_model"
        assert c.delete("/v1/models/nope", headers=admin).status_code == 404
    with live_server() as srv:  # no admin keys: no model management
        assert srv.client.post("/v1/models/load", json={"model": "x"}).status_code == 403


def test_edit_jobs_take_priority_and_negative_prompt_as_form_fields():
    """The page's edit form (multipart: every field is text) carries the issue-16 fields too."""
    im = Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    with live_server() as srv:
        r = srv.client.post("/v1/jobs/edits", files={"image": ("in.png", buf.getvalue(), "image/png")},
                            data={"prompt": "a red circle", "steps": str(STEPS), "seed": "1", "priority": "3",
                                  "negative_prompt": "red"})
        assert r.status_code == 202, r.text
        assert r.json()["priority"] == 3 and r.json()["settings"]["negative_prompt"] == "red"
        done = srv.wait_job(r.json()["id"])
        assert done["state"] == "done"
        png = srv.client.get(done["data"][0]["url"]).content if "url" in done["data"][0] else \
            base64.b64decode(done["data"][0]["b64_json"])
        assert parameters_from_bytes(png)["negative_prompt"] == "red"
        bad = srv.client.post("/v1/jobs/edits", files={"image": ("in.png", buf.getvalue(), "image/png")},
                              data={"prompt": "x", "priority": "11"})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "priority"
