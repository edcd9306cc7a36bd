"""Live generation (issue 14): a request with a `supersede` key cancels the same caller's older
unfinished request with that key, on the server, whether it was queued or running (the running
one stops at its next step, so it stops using the CPU); other keys and other callers are left
alone; the page, in the real headless Chromium, asks for a 1-step image as the user types and
shows it in place with the time it took."""
from __future__ import annotations

import re
import threading
from pathlib import Path

import pytest

from conftest_serve import LONG, STEPS, live_server

pytestmark = pytest.mark.slow


def superseded(srv) -> dict:
    text = srv.client.get("/metrics").text
    return {m.group(1): int(m.group(2)) for m in re.finditer(r'blinkgen_jobs_superseded_total\{state="(\w+)"\} (\d+)', text)}


def test_a_newer_request_with_the_same_key_cancels_the_older_one():
    with live_server() as srv:
        first = srv.client.post("/v1/jobs", json={"prompt": "a long job", "supersede": "tab-1", **LONG}).json()
        srv.wait_job(first["id"], states=("running",))
        queued = srv.client.post("/v1/jobs", json={"prompt": "queued behind it", "supersede": "tab-2", **LONG}).json()
        newest = srv.client.post("/v1/jobs", json={"prompt": "tab 2 again", "supersede": "tab-2", "steps": STEPS}).json()
        q = srv.wait_job(queued["id"], states=("cancelled",))  # never ran
        assert q["error"]["code"] == "superseded" and q["error"]["param"] == "supersede"
        other = srv.client.post("/v1/jobs", json={"prompt": "another key", "supersede": "tab-3", **LONG}).json()
        newer = srv.client.post("/v1/jobs", json={"prompt": "what the user typed next", "supersede": "tab-1",
                                                  "steps": STEPS}).json()
        a = srv.wait_job(first["id"], states=("cancelled",))  # was running: stopped at its next step
        assert a["error"]["code"] == "superseded" and a["progress"]["images_done"] < LONG["n"]
        assert srv.wait_job(newer["id"])["state"] == "done" and srv.wait_job(newest["id"])["state"] == "done"
        assert srv.client.get(f"/v1/jobs/{other['id']}").json()["state"] != "cancelled"  # another key: untouched
        assert superseded(srv) == {"running": 1, "queued": 1}
        srv.client.delete(f"/v1/jobs/{other['id']}")


def test_the_synchronous_endpoint_answers_a_superseded_request_with_409():
    with live_server() as srv:
        out = {}

        def slow():
            out["r"] = srv.client.post("/v1/images/generations", json={"prompt": "slow", "supersede": "k", **{"steps": 500}})

        t = threading.Thread(target=slow)
        t.start()
        import time
        deadline = time.monotonic() + 60
        while not srv.service.batcher.current and time.monotonic() < deadline:
            time.sleep(0.01)
        r = srv.client.post("/v1/images/generations", json={"prompt": "fast", "supersede": "k", "steps": STEPS})
        t.join(60)
        assert r.status_code == 200 and len(r.json()["data"]) == 1
        assert out["r"].status_code == 409 and out["r"].json()["error"]["code"] == "superseded"


def test_keys_are_per_caller(tmp_path):
    from blinkgen.serve.limits import load_api_keys

    keys = tmp_path / "keys"
    keys.write_text("sk-alice-0123456789\nsk-bob-9876543210\n")
    A, B = ({"Authorization": f"Bearer {k}"} for k in ("sk-alice-0123456789", "sk-bob-9876543210"))
    with live_server(api_keys=load_api_keys(keys, env={})) as srv:
        a = srv.client.post("/v1/jobs", json={"prompt": "alice", "supersede": "same", **LONG}, headers=A).json()
        b = srv.client.post("/v1/jobs", json={"prompt": "bob", "supersede": "same", "steps": STEPS}, headers=B).json()
        assert srv.wait_job(b["id"], headers=B)["state"] == "done"
        assert srv.client.get(f"/v1/jobs/{a['id']}", headers=A).json()["state"] != "cancelled"  # another caller's
        srv.client.delete(f"/v1/jobs/{a['id']}", headers=A)


def test_the_page_generates_live_as_the_user_types(tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    from test_serve_browser import ARGS, CHROMIUM

    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is absent")
    with live_server() as srv, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page()
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(srv.base_url + "/")
            page.wait_for_function("document.querySelector('#model').options.length > 0", timeout=30_000)
            page.check("#liveon")
            page.locator("#prompt").press_sequentially("a red circle", delay=30)
            page.wait_for_function("window.blinkLive.last && window.blinkLive.last.prompt === 'a red circle'",
                                   timeout=120_000)
            live = page.evaluate("window.blinkLive")
            assert live["sent"] >= 1 and live["shown"] >= 1 and live["sent"] <= len("a red circle")
            assert page.locator("#liveimg").get_attribute("src").startswith("data:image/png;base64,")
            assert page.locator("#liveimg").evaluate("i => i.naturalWidth") == int(srv.size.split("x")[0])
            assert re.match(r"^\d+ ms · a red circle$", page.locator("#livetime").inner_text())
            assert page.locator(".job").count() == 0  # live images do not add job cards
            assert not errors, errors
        finally:
            browser.close()
