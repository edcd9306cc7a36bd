"""The page's everyday controls (issue 16) in a real headless Chromium (Debian's /usr/bin/chromium,
driven by Playwright, as test_serve_browser.py): the negative-prompt field reaches the server and
the PNG, and a dropped blinkgen PNG fills the form -- Generate then makes the same pixels -- while
any other image still becomes the image to edit."""
from __future__ import annotations

import base64
import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from blinkgen.pngmeta import parameters_from_bytes, text_chunk
from conftest_serve import live_server

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
BIG_SEED = 2**62 + 7  # past 2^53: a JS number would round it, the page must keep its digits

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                reason=f"{CHROMIUM} is absent (apt-get install -y chromium)")

DROP = """([b64, name, type]) => {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const dt = new DataTransfer();
  dt.items.add(new File([bytes], name, { type }));
  document.querySelector('#drop').dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true,
                                                                         cancelable: true }));
}"""


@pytest.fixture()
def page_of():
    """page_of(srv) -> a loaded page of the live server (closed at the end); its errors list."""
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        errors: list[str] = []

        def open_page(srv):
            page = browser.new_page(viewport={"width": 1000, "height": 900})
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(srv.base_url + "/")
            page.wait_for_selector("#status.ok", timeout=15_000)
            page.wait_for_function("document.querySelector('#sampler').options.length > 0")
            return page

        try:
            yield open_page, errors
        finally:
            browser.close()


def finished_png(page) -> tuple[str, bytes]:
    """Wait for the newest card to finish -> (its job id, its first image's PNG bytes)."""
    card = page.locator(".job").first
    card.wait_for(timeout=30_000)
    page.wait_for_selector(".job.done", timeout=180_000)
    href = card.locator("figcaption a").first.get_attribute("href")
    return card.get_attribute("data-id"), page.request.get(href).body()


def test_negative_prompt_field_reaches_the_job_and_the_png(page_of):
    open_page, errors = page_of
    with live_server(batch_window_ms=5) as srv:
        page = open_page(srv)
        assert page.locator("#negative").is_enabled()  # the tiny diffusion model supports it
        page.fill("#prompt", "a red circle")
        page.fill("#negative", "red")
        page.fill("#seed", "5")
        page.fill("#steps", "2")
        page.fill("#n", "1")
        page.click("#generate")
        job_id, png = finished_png(page)
        assert "negative: red" in page.locator(".job .meta").first.inner_text()
        assert srv.client.get(f"/v1/jobs/{job_id}").json()["settings"]["negative_prompt"] == "red"
        assert parameters_from_bytes(png)["negative_prompt"] == "red"
        # a blank field sends none: the job records no negative prompt
        page.fill("#negative", "   ")
        page.click("#generate")
        page.wait_for_function(f"document.querySelector('.job').dataset.id !== '{job_id}'")
        job2, png2 = finished_png(page)
        assert "negative_prompt" not in srv.client.get(f"/v1/jobs/{job2}").json()["settings"]
        assert "negative_prompt" not in parameters_from_bytes(png2)
        assert not errors, errors


def test_dropped_blinkgen_png_fills_the_form_and_replays_it(page_of, tmp_path):
    open_page, errors = page_of
    with live_server(batch_window_ms=5) as srv:
        want = {"prompt": "a blue square", "seed": BIG_SEED, "steps": 3, "guidance": 2.5, "sampler": "euler",
                "negative_prompt": "green"}
        r = srv.client.post("/v1/images/generations", json={**want, "response_format": "b64_json"})
        assert r.status_code == 200, r.text
        src = base64.b64decode(r.json()["data"][0]["b64_json"])
        assert {k: parameters_from_bytes(src)[k] for k in want} == want

        page = open_page(srv)
        page.fill("#n", "4")
        page.evaluate(DROP, [base64.b64encode(src).decode(), "made-by-blinkgen.png", "image/png"])
        page.wait_for_selector("#replay:not([hidden])", timeout=15_000)
        form = page.evaluate("""() => Object.fromEntries(['prompt', 'negative', 'seed', 'steps', 'guidance',
            'sampler', 'n', 'model'].map((id) => [id, document.getElementById(id).value]))""")
        assert form == {"prompt": "a blue square", "negative": "green", "seed": str(BIG_SEED), "steps": "3",
                        "guidance": "2.5", "sampler": "euler", "n": "1", "model": srv.model}
        assert page.locator("#editor").is_hidden()  # not taken as an image to edit
        assert "made-by-blinkgen.png" in page.locator("#replaynote").inner_text()
        assert page.locator("#generate").inner_text() == "Generate"
        page.click("#generate")
        _, png = finished_png(page)
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(png))), np.asarray(Image.open(io.BytesIO(src))))
        assert parameters_from_bytes(png)["seed"] == BIG_SEED

        # the banner's button makes the same PNG the image to edit instead
        page.click("#replayedit")
        page.wait_for_selector("#editor:not([hidden])", timeout=15_000)
        assert page.locator("#replay").is_hidden() and page.locator("#generate").inner_text() == "Edit"
        page.click("#removeimage")

        # the settings in a compressed iTXt chunk (as other tools may rewrite them) are read too
        text = text_chunk(src)
        info = PngImagePlugin.PngInfo()
        info.add_itxt("parameters", text.replace("a blue square", "a blue square, again"), zip=True)
        buf = io.BytesIO()
        Image.open(io.BytesIO(src)).save(buf, format="PNG", pnginfo=info)
        assert b"iTXt" in buf.getvalue()
        page.evaluate(DROP, [base64.b64encode(buf.getvalue()).decode(), "itxt.png", "image/png"])
        page.wait_for_function("document.querySelector('#prompt').value === 'a blue square, again'", timeout=15_000)

        # a PNG without blinkgen's chunk is an image to edit, as before issue 16
        plain = io.BytesIO()
        Image.open(io.BytesIO(src)).save(plain, format="PNG")
        page.evaluate(DROP, [base64.b64encode(plain.getvalue()).decode(), "plain.png", "image/png"])
        page.wait_for_selector("#editor:not([hidden])", timeout=15_000)
        assert page.locator("#replay").is_hidden()
        shot = Path(os.environ.get("BLINKGEN_SCREENSHOT_REPLAY", tmp_path / "serve_page_replay.png"))
        shot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shot), full_page=True)
        assert not errors, errors
