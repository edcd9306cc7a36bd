"""The images API end to end against a live server and the real tiny model: the official OpenAI
client, url links, models, health/ready/metrics, jobs with polling, SSE progress with previews,
and cancel."""
from __future__ import annotations

import base64
import io
import json
import time

import pytest
from PIL import Image

from conftest_serve import LONG, SLOW_STEPS, STEPS, live_server

openai = pytest.importorskip("openai")


@pytest.fixture(scope="module")
def srv():
    with live_server(warmup=True, batch_window_ms=5) as live:
        yield live


def png_of(b: bytes) -> Image.Image:
    assert b[:8] == b"\x89PNG\r\n\x1a\n"
    im = Image.open(io.BytesIO(b))
    im.load()
    return im


def test_openai_client_gets_pngs(srv):
    client = openai.OpenAI(base_url=srv.base_url + "/v1", api_key="unused", max_retries=0)
    res = client.images.generate(model=srv.model, prompt="a red circle", n=2, size=srv.size,
                                 response_format="b64_json", extra_body={"seed": 1, "steps": STEPS})
    assert len(res.data) == 2
    side = int(srv.size.split("x")[0])
    for i, d in enumerate(res.data):
        im = png_of(base64.b64decode(d.b64_json))
        assert im.size == (side, side)
        params = json.loads(im.text["parameters"])
        assert params["seed"] == 1 + i and params["steps"] == STEPS and params["prompt"] == "a red circle"
        assert params["model"]
    models = [m.id for m in client.models.list()]
    assert models == [srv.model]


def test_url_format_serves_png_and_unknown_token_404(srv):
    r = srv.client.post("/v1/images/generations", json={"prompt": "a blue square", "steps": STEPS,
                                                        "response_format": "url", "seed": 3})
    assert r.status_code == 200, r.text
    url = r.json()["data"][0]["url"]
    assert url.startswith(srv.base_url + "/images/")
    img = srv.client.get(url)
    assert img.status_code == 200 and img.headers["content-type"] == "image/png"
    png_of(img.content)
    missing = srv.client.get("/images/not-a-token.png")
    assert missing.status_code == 404 and "error" in missing.json()


def test_health_ready_models_metrics(srv):
    assert srv.client.get("/health").json() == {"status": "ok"}
    ready = srv.client.get("/ready")
    assert ready.status_code == 200 and ready.json()["ready"] is True
    card = srv.client.get("/v1/models").json()["data"][0]
    assert card["id"] == srv.model and card["sizes"] == [srv.size] and card["samplers"]
    srv.client.post("/v1/images/generations", json={"prompt": "metrics", "steps": 1})
    text = srv.client.get("/metrics").text
    for series in ("blinkgen_requests_total{", "blinkgen_request_latency_seconds_bucket{",
                   "blinkgen_queue_depth ", "blinkgen_batch_size_bucket{", "blinkgen_images_per_second ",
                   "blinkgen_images_generated_total "):
        assert series in text, series
    assert 'endpoint="/v1/images/generations",status="200"' in text


def test_job_lifecycle_with_polling(srv):
    r = srv.client.post("/v1/jobs", json={"prompt": "two shapes", "n": 3, "steps": STEPS, "seed": 7})
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["state"] in ("queued", "running") and job["id"].startswith("job_")
    assert r.headers["location"] == f"/v1/jobs/{job['id']}"
    done = srv.wait_job(job["id"])
    assert done["state"] == "done"
    assert done["progress"]["images_done"] == 3 and done["progress"]["fraction"] == 1.0
    assert [d["seed"] for d in done["data"]] == [7, 8, 9]
    png_of(base64.b64decode(done["data"][0]["b64_json"]))
    # cancelling a finished job is a conflict, not a silent success
    assert srv.client.delete(f"/v1/jobs/{job['id']}").status_code == 409


def test_sse_progress_with_previews(srv):
    job = srv.client.post("/v1/jobs", json={"prompt": "a green triangle", "n": 2, "steps": SLOW_STEPS}).json()
    events = []
    with srv.client.stream("GET", f"/v1/jobs/{job['id']}/events") as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        name = None
        for line in r.iter_lines():
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                events.append((name, json.loads(line[5:])))
    names = [n for n, _ in events]
    assert names[-1] == "done" and "progress" in names
    steps_seen = {e["progress"]["step"] for n, e in events if n == "progress" and e["state"] == "running"}
    assert steps_seen & set(range(1, SLOW_STEPS + 1)), steps_seen
    previews = [e["preview"] for n, e in events if e.get("preview")]
    assert previews, "no low-resolution preview was streamed"
    assert previews[0].startswith("data:image/png;base64,")
    thumb = png_of(base64.b64decode(previews[0].split(",", 1)[1]))
    assert max(thumb.size) <= 32
    final = events[-1][1]
    assert len(final["data"]) == 2 and all(d["url"] for d in final["data"])


def test_cancel_running_and_queued_jobs(srv):
    long = srv.client.post("/v1/jobs", json={"prompt": "long", **LONG}).json()
    running = srv.wait_job(long["id"], states=("running",))
    assert running["queue_position"] is None
    # different steps: cannot share the running batch, so it waits in the queue
    queued = srv.client.post("/v1/jobs", json={"prompt": "queued", "steps": 3}).json()
    assert queued["state"] == "queued" and queued["queue_position"] == 0
    r = srv.client.delete(f"/v1/jobs/{queued['id']}")
    assert r.status_code == 200 and r.json()["state"] == "cancelled"
    r = srv.client.delete(f"/v1/jobs/{long['id']}")
    assert r.status_code == 200 and r.json()["state"] == "cancelled"
    assert srv.client.delete(f"/v1/jobs/{long['id']}").status_code == 200  # idempotent
    # the aborted batch frees the worker: a small request now finishes promptly
    t = time.monotonic()
    ok = srv.client.post("/v1/images/generations", json={"prompt": "after", "steps": 1})
    assert ok.status_code == 200 and time.monotonic() - t < 60
    assert srv.client.get(f"/v1/jobs/{long['id']}").json()["state"] == "cancelled"


def test_unknown_job_is_404(srv):
    for method, path in (("GET", "/v1/jobs/job_nope"), ("DELETE", "/v1/jobs/job_nope"),
                         ("GET", "/v1/jobs/job_nope/events")):
        r = srv.client.request(method, path)
        assert r.status_code == 404 and r.json()["error"]["code"] == "job_not_found"


def test_web_page_and_static_files_are_served(srv):
    page = srv.client.get("/")
    assert page.status_code == 200 and "<form" in page.text
    for f in ("/static/app.js", "/static/style.css"):
        assert srv.client.get(f).status_code == 200


def test_several_models_by_name():
    from conftest_serve import tiny_generator

    gen = tiny_generator()
    with live_server(gens={"first": gen, "second": gen}) as live:
        ids = [m["id"] for m in live.client.get("/v1/models").json()["data"]]
        assert ids == ["first", "second"]
        r = live.client.post("/v1/images/generations", json={"prompt": "a", "model": "second", "steps": 1})
        assert r.status_code == 200
        bad = live.client.post("/v1/images/generations", json={"prompt": "a", "model": "third"})
        assert bad.status_code == 400 and "first, second" in bad.json()["error"]["message"]
        # no model named: the first one serves it
        job = live.client.post("/v1/jobs", json={"prompt": "a", "steps": 1}).json()
        assert job["model"] == "first"
        live.wait_job(job["id"])


def test_client_that_hangs_up_cancels_its_work(srv):
    import httpx

    def cancelled() -> int:
        text = srv.client.get("/metrics").text
        line = next((l for l in text.splitlines() if l.startswith('blinkgen_jobs_finished_total{state="cancelled"}')), None)
        return int(line.split()[-1]) if line else 0

    before = cancelled()
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(srv.base_url + "/v1/images/generations", json={"prompt": "abandoned", **LONG}, timeout=0.25)
    deadline = time.monotonic() + 15
    while cancelled() == before or "blinkgen_images_running 0" not in srv.client.get("/metrics").text:
        assert time.monotonic() < deadline, "abandoned request kept the worker busy"
        time.sleep(0.05)


def test_metrics_text_format_is_well_formed(srv):
    import re

    sample = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\]|\\.)*",?)*\})? '
                        r'(-?[0-9.eE+-]+|\+Inf|NaN)$')
    text = srv.client.get("/metrics").text
    assert text.endswith("\n")
    for line in text.splitlines():
        assert line.startswith("# HELP ") or line.startswith("# TYPE ") or sample.match(line), line
