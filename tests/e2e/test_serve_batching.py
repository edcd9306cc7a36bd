"""Dynamic batching: a request's bytes do not depend on its batch-mates, compatible requests do
share model calls, and a big request cannot starve small ones (round-robin filling)."""
from __future__ import annotations

import base64
import time

import pytest

from conftest_serve import STEPS, live_server

WINDOW_MS = 600  # long enough that back-to-back test submissions surely land in one window


@pytest.fixture(scope="module")
def srv():
    with live_server(max_batch=4, batch_window_ms=WINDOW_MS) as live:
        yield live


def submit(srv, **body) -> str:
    r = srv.client.post("/v1/jobs", json={"steps": STEPS, **body})
    assert r.status_code == 202, r.text
    return r.json()["id"]


def pngs(job: dict) -> list[bytes]:
    return [base64.b64decode(d["b64_json"]) for d in job["data"]]


def test_same_request_alone_or_batched_gives_identical_bytes(srv):
    req = {"prompt": "a red circle left of a blue square", "n": 2, "seed": 123}
    alone = srv.wait_job(submit(srv, **req))
    assert alone["batch_sizes"] == [2]
    # the same request again, now arriving together with strangers with other prompts and seeds
    others = [submit(srv, prompt="a green star", seed=5), submit(srv, prompt="yellow", n=1, seed=99)]
    mixed_id = submit(srv, **req)
    mixed = srv.wait_job(mixed_id)
    assert mixed["state"] == "done"
    assert mixed["batch_sizes"][0] > 2, f"test did not batch: {mixed['batch_sizes']}"
    assert pngs(mixed) == pngs(alone)
    for o in others:
        assert srv.wait_job(o)["state"] == "done"
    # and through the synchronous OpenAI-shaped endpoint too
    sync = srv.client.post("/v1/images/generations", json={**req, "steps": STEPS}).json()
    assert [base64.b64decode(d["b64_json"]) for d in sync["data"]] == pngs(alone)


def test_big_request_does_not_starve_small_one(srv):
    big = submit(srv, prompt="many", n=10, seed=0)
    small = submit(srv, prompt="one", n=1, seed=0)
    small_done = srv.wait_job(small)
    big_now = srv.client.get(f"/v1/jobs/{big}").json()
    # round-robin: the small job rides in the very first batch, next to three of the big job's
    assert small_done["batch_sizes"] == [4]
    assert big_now["progress"]["images_done"] < 10
    big_done = srv.wait_job(big)
    assert big_done["batch_sizes"] == [4, 4, 3]
    assert [d["seed"] for d in big_done["data"]] == list(range(10))


def test_incompatible_settings_take_turns(srv):
    big = submit(srv, prompt="slow lane", n=10, steps=8)  # three batches: time for the other to arrive
    other = submit(srv, prompt="other lane", n=1, steps=1)
    order = []
    deadline = time.monotonic() + 60
    while len(order) < 2 and time.monotonic() < deadline:
        for jid in (big, other):
            if jid not in order and srv.client.get(f"/v1/jobs/{jid}").json()["state"] == "done":
                order.append(jid)
        time.sleep(0.02)
    # the big job had the head of the queue, but after one batch it goes to the back
    assert order == [other, big]
    assert srv.client.get(f"/v1/jobs/{other}").json()["batch_sizes"] == [1]


def test_batch_sizes_reach_metrics(srv):
    text = srv.client.get("/metrics").text
    count = next(l for l in text.splitlines() if l.startswith("blinkgen_batch_size_count"))
    assert int(count.split()[-1]) >= 3
    single = next(l for l in text.splitlines() if l.startswith('blinkgen_batch_size_bucket{le="1"}'))
    total = next(l for l in text.splitlines() if l.startswith('blinkgen_batch_size_bucket{le="+Inf"}'))
    assert int(single.split()[-1]) < int(total.split()[-1])  # some batches held more than one image
