"""The web page in a real headless Chromium (Debian's /usr/bin/chromium, driven by Playwright):
load it, submit a prompt, watch the progress bar move, see the images with seeds and a download
link. Writes a screenshot to $BLINKGEN_SCREENSHOT (or the test's tmp dir) for a human to look at."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest_serve import LONG, SLOW_STEPS, live_server

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                reason=f"{CHROMIUM} is absent (apt-get install -y chromium)")


def test_page_submits_shows_progress_and_images(tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    with live_server(batch_window_ms=5) as srv, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 760})
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(srv.base_url + "/")
            page.wait_for_selector("#status.ok", timeout=15_000)
            page.wait_for_function("document.querySelector('#sampler').options.length > 0")
            assert page.locator("#model option").first.get_attribute("value") == srv.model
            page.fill("#prompt", "a red circle above a blue square")
            page.fill("#n", "3")
            page.fill("#seed", "42")
            # enough steps that the bar is seen part-way even when a loaded 2-core machine starves
            # the event loop (SSE sends the latest state when it wakes; 30 steps once came too late)
            page.fill("#steps", str(5 * SLOW_STEPS))
            # Record, inside the page, whether the bar was ever set part-way while the job ran:
            # polling from the test can miss a fast job or time out on a slow machine. The
            # observer reads every mutation record (oldValue), not the DOM at callback time: on a
            # loaded machine several SSE events can arrive in one chunk and be rendered in one JS
            # task, and the callback would then only see the final state.
            page.evaluate("""() => { window.__sawProgress = false; window.__values = [];
                new MutationObserver((records) => {
                  for (const r of records) {
                    if (r.attributeName !== 'aria-valuenow' || !r.target.closest('.job')) continue;
                    const seen = [+r.oldValue, +r.target.getAttribute('aria-valuenow')];
                    window.__values.push(seen.join('>') + ' ' + (r.target.closest('.job').className));
                    if (seen.some((v) => v > 0 && v < 100)) window.__sawProgress = true;
                  }
                }).observe(document.body, {subtree: true, attributes: true, attributeOldValue: true,
                                           attributeFilter: ['aria-valuenow']}); }""")
            # Hold the page's job behind a long one until the page's event stream is delivering,
            # then cancel the long one: the part-way check then measures what the page shows while
            # its job runs, not a race between the browser opening its stream and a tiny job
            # finishing. (A short job ahead was not enough: in a loaded clean-clone full run the
            # page's first SSE event arrived after both jobs were done, records queued -> done.)
            ahead = page.request.post(srv.base_url + "/v1/jobs", data={"prompt": "a long job ahead", **LONG})
            assert ahead.status == 202, ahead.text()
            page.click("#generate")
            card = page.locator(".job").first
            card.wait_for(timeout=30_000)
            # one record is the card drawn from the POST answer; the next one comes from the stream
            try:
                page.wait_for_function("window.__values.length >= 2", timeout=120_000)
            except sync_api.TimeoutError:
                pytest.fail(f"the page's event stream delivered nothing in 120 s: {page.evaluate('window.__values')}")
            first = page.evaluate("window.__values")
            assert first[1].endswith("job queued"), f"the page's job did not wait for its stream: {first}"
            gone = page.request.delete(srv.base_url + f"/v1/jobs/{ahead.json()['id']}")
            assert gone.status == 200, gone.text()
            shot = Path(os.environ.get("BLINKGEN_SCREENSHOT", tmp_path / "serve_page.png"))
            shot.parent.mkdir(parents=True, exist_ok=True)
            card.locator(".gallery figure").nth(2).wait_for(timeout=180_000)
            page.wait_for_selector(".job.done", timeout=60_000)
            saw_progress = page.evaluate("window.__sawProgress")
            seen_values = page.evaluate("window.__values")
            assert card.locator(".progress").get_attribute("aria-valuenow") == "100"
            captions = card.locator("figcaption").all_inner_texts()
            assert [c.split(" ·")[0] for c in captions] == ["seed 42", "seed 43", "seed 44"]
            # the images really loaded (natural size of the PNG, not a broken-image icon)
            widths = card.locator(".gallery img").evaluate_all("imgs => imgs.map(i => i.naturalWidth)")
            assert all(w == int(srv.size.split("x")[0]) for w in widths), widths
            href = card.locator("figcaption a").first.get_attribute("href")
            assert page.request.get(href).headers["content-type"] == "image/png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 0
            assert not errors, errors
            assert saw_progress, f"progress bar never seen part-way; aria-valuenow records: {seen_values}"
        finally:
            browser.close()


def test_page_edits_an_uploaded_image_with_a_painted_mask(tmp_path):
    """Upload (the file picker), paint a mask on the canvas, submit, watch the job to the end;
    the result keeps every pixel the mask did not cover exactly (the mask travels in OpenAI's
    transparent = repaint convention) and differs where it was painted."""
    import io

    import numpy as np
    from PIL import Image

    sync_api = pytest.importorskip("playwright.sync_api")
    src = tmp_path / "in.png"
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(src)
    with live_server(batch_window_ms=5) as srv, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 900})
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(srv.base_url + "/")
            page.wait_for_selector("#status.ok", timeout=15_000)
            page.wait_for_function("document.querySelector('#sampler').options.length > 0")
            page.set_input_files("#file", str(src))
            page.wait_for_selector("#editor:not([hidden])", timeout=15_000)
            sent = page.evaluate("""() => { const c = document.querySelector('#imgcanvas');
                return Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data); }""")
            assert np.array_equal(np.array(sent, np.uint8).reshape(32, 32, 4)[..., :3], np.asarray(Image.open(src)))
            page.fill("#brush", "30")
            box = page.locator("#maskcanvas").bounding_box()
            page.mouse.move(box["x"] + 60, box["y"] + 60)
            page.mouse.down()
            page.mouse.move(box["x"] + 110, box["y"] + 110, steps=8)
            page.mouse.up()
            paint = page.evaluate("""() => { const c = document.querySelector('#maskcanvas');
                return Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data); }""")
            painted = np.array(paint, np.uint8).reshape(32, 32, 4)[..., 3] > 0
            assert 4 < painted.sum() < 32 * 32 / 2, painted.sum()
            page.fill("#prompt", "a red circle")
            page.fill("#seed", "7")
            page.fill("#steps", "2")
            page.click("#generate")
            card = page.locator(".job").first
            card.wait_for(timeout=30_000)
            page.wait_for_selector(".job.done", timeout=180_000)
            assert card.locator(".progress").get_attribute("aria-valuenow") == "100"
            href = card.locator("figcaption a").first.get_attribute("href")
            out = np.asarray(Image.open(io.BytesIO(page.request.get(href).body())).convert("RGB"))
            want = np.asarray(Image.open(src))
            assert np.array_equal(out[~painted], want[~painted])
            assert np.abs(out[painted].astype(int) - want[painted]).mean() > 1
            shot = Path(os.environ.get("BLINKGEN_SCREENSHOT_EDIT", tmp_path / "serve_page_edit.png"))
            shot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(shot), full_page=True)
            assert not errors, errors
        finally:
            browser.close()
