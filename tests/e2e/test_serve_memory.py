"""Everything the server keeps after answering is bounded by count, bytes and age: finished jobs,
url images, the images/s window; and synchronous requests keep nothing once answered."""
from __future__ import annotations

import time
from types import SimpleNamespace

import types

import pytest

from blinkgen.serve import jobs as jobs_mod
from blinkgen.serve import metrics as metrics_mod
from blinkgen.serve.jobs import ImageStore, Job, JobStore
from blinkgen.serve.metrics import Metrics
from conftest_serve import STEPS, live_server

SETTINGS = SimpleNamespace(steps=2, guidance=1.0, sampler="euler")


class Clock:
    """A fake time.monotonic that tests move by hand."""

    def __init__(self):
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _time_with(clock):
    import time as real

    return types.SimpleNamespace(**{**{k: getattr(real, k) for k in dir(real) if not k.startswith("__")},
                                    "monotonic": clock})


@pytest.fixture
def clock(monkeypatch):
    c = Clock()
    # patch the module's name `time`, never the global time module: other threads in this test
    # process (live servers of other tests, batcher workers) must keep the real clock
    monkeypatch.setattr(jobs_mod, "time", _time_with(c))
    return c


def finished_job(store: JobStore, n: int = 1, png: bytes = b"p" * 10) -> Job:
    job = Job(id=store.new_id(), model="m", prompt="p", seeds=list(range(n)), settings=SETTINGS,
              response_format="b64_json", deadline=float("inf"))
    store.add(job)
    for i in range(n):
        store.add_result(job, i, i, png)
    store.finish(job, "done")
    return job


def test_finished_jobs_capped_by_count_oldest_first(clock):
    store = JobStore(max_finished=3)
    jobs = [finished_job(store) for _ in range(5)]
    assert [store.get(j.id) for j in jobs] == [None, None, *jobs[2:]]
    assert store.stats()["finished_jobs"] == 3


def test_finished_jobs_capped_by_images_and_bytes(clock):
    store = JobStore(max_finished=100, max_images=5, max_bytes=10**9)
    jobs = [finished_job(store, n=2) for _ in range(4)]
    assert [store.get(j.id) is not None for j in jobs] == [False, False, True, True]
    assert store.stats()["finished_images"] == 4
    store = JobStore(max_finished=100, max_images=100, max_bytes=250)
    jobs = [finished_job(store, png=b"x" * 100) for _ in range(4)]
    assert [store.get(j.id) is not None for j in jobs] == [False, False, True, True]
    assert store.stats()["finished_bytes"] == 200


def test_finished_jobs_expire_even_without_new_jobs(clock):
    store = JobStore(ttl_s=60)
    old = finished_job(store)
    clock.t += 30
    new = finished_job(store)
    clock.t += 31
    assert store.get(old.id) is None and store.get(new.id) is new
    clock.t += 30
    assert store.get(new.id) is None and store.stats()["jobs"] == 0


def test_live_jobs_are_never_evicted(clock):
    store = JobStore(max_finished=1, ttl_s=1)
    live = Job(id=store.new_id(), model="m", prompt="p", seeds=[0], settings=SETTINGS,
               response_format="url", deadline=float("inf"))
    store.add(live)
    for _ in range(3):
        finished_job(store)
    clock.t += 100
    assert store.get(live.id) is live


def test_discard_forgets_a_finished_job(clock):
    store = JobStore()
    job = finished_job(store, n=3)
    store.discard(job)
    assert store.get(job.id) is None
    assert store.stats()["finished_images"] == 0 and store.stats()["finished_bytes"] == 0


def test_image_store_capped_by_count_bytes_and_age(clock):
    imgs = ImageStore(ttl_s=60, max_images=3, max_bytes=10**9)
    tokens = [imgs.put(b"x") for _ in range(5)]
    assert [imgs.get(t) is not None for t in tokens] == [False, False, True, True, True]
    imgs = ImageStore(ttl_s=60, max_images=100, max_bytes=250)
    tokens = [imgs.put(b"x" * 100) for _ in range(4)]
    assert [imgs.get(t) is not None for t in tokens] == [False, False, True, True]
    assert imgs.stats() == {"url_images": 2, "url_bytes": 200}
    clock.t += 61
    imgs.put(b"y")  # a put alone purges what expired, without any get
    assert imgs.stats() == {"url_images": 1, "url_bytes": 1}


def test_images_per_second_window_is_bounded_without_scrapes(monkeypatch):
    c = Clock()
    monkeypatch.setattr(metrics_mod, "time", _time_with(c))
    m = Metrics()
    for _ in range(1000):
        m.observe_batch(4)
        c.t += 1.0
    assert len(m._recent) <= metrics_mod.RATE_WINDOW_S + 1


def test_sync_requests_keep_nothing_and_caps_hold_on_a_live_server():
    with live_server(keep_jobs=2) as srv:
        for fmt in ("b64_json", "url"):
            r = srv.client.post("/v1/images/generations", json={"prompt": "sync", "steps": STEPS,
                                                                "response_format": fmt})
            assert r.status_code == 200, r.text
        assert srv.service.store.stats()["jobs"] == 0
        # only the url answer's image has a link (and a place in the link store; issue 10)
        assert srv.service.store.stats()["url_images"] == 1  # the link stays valid until its ttl
        ids = [srv.client.post("/v1/jobs", json={"prompt": f"j{i}", "steps": STEPS}).json()["id"]
               for i in range(3)]
        for i in ids:
            t = time.monotonic() + 60
            while srv.service.store.get(i) is not None and srv.service.store.get(i).alive:
                assert time.monotonic() < t
                time.sleep(0.05)
        assert srv.service.store.stats()["finished_jobs"] <= 2
        assert srv.client.get(f"/v1/jobs/{ids[-1]}").json()["state"] == "done"
        text = srv.client.get("/metrics").text
        kept = srv.service.store.stats()
        assert f"blinkgen_jobs_kept {kept['jobs']}" in text
        assert f'blinkgen_images_kept{{store="url"}} {kept["url_images"]}' in text
