"""Issue 10 on the server, against live servers and the real OpenAI client: the one seed rule
(fault 3), links that live until their TTL unless the documented cap on linked images evicts
them (fault 6), and every field the official client's images.generate can send honoured, a
documented no-op, or a 400 naming the accepted values (fault 7)."""
from __future__ import annotations

import base64
import inspect

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import blinkgen
from blinkgen.data.image_io import read_image
from blinkgen.pngmeta import read_parameters
from blinkgen.seeds import SEED_MAX
from blinkgen.serve.schemas import OPENAI_CHOICES, OPENAI_REFUSED, ImageRequest
from conftest import run_cli
from conftest_serve import STEPS, live_server

openai = pytest.importorskip("openai")


@pytest.fixture(scope="module")
def srv(tiny_model_dir):
    with live_server({"tiny": blinkgen.load(str(tiny_model_dir))}, keep_images=4) as live:
        yield live


def gen_req(srv, **body):
    return srv.client.post("/v1/images/generations", json={"prompt": "red heart", "steps": STEPS, **body})


def pixels(b64: str) -> np.ndarray:
    return np.asarray(read_image(base64.b64decode(b64)))


# --- fault 3: one seed range, one rule ---------------------------------------------------------

def test_issue_example_seeds_continue_past_2_32(srv):
    r = gen_req(srv, seed=4294967295, n=2)
    assert r.status_code == 200, r.text
    assert [d["seed"] for d in r.json()["data"]] == [4294967295, 4294967296]  # as the CLI: no wrap


def test_seed_range_edges(srv):
    r = gen_req(srv, seed=SEED_MAX)
    assert r.status_code == 200 and r.json()["data"][0]["seed"] == SEED_MAX
    r = gen_req(srv, seed=SEED_MAX, n=2)
    assert r.status_code == 400 and r.json()["error"]["param"] == "seed"
    assert "past the largest seed" in r.json()["error"]["message"]
    for bad in (SEED_MAX + 1, -1):
        assert gen_req(srv, seed=bad).json()["error"]["param"] == "seed"
    seeds = [d["seed"] for d in gen_req(srv, n=2).json()["data"]]  # no seed: random, then consecutive
    assert seeds[1] == seeds[0] + 1 and 0 <= seeds[0] < 2**32


def test_png_seed_from_the_cli_reproduces_through_the_server_and_the_openai_client(srv, tiny_model_dir, tmp_path):
    run_cli("generate", "red heart", "--model", tiny_model_dir, "-n", 2, "--seed", SEED_MAX - 1,
            "--steps", STEPS, "--outdir", tmp_path)
    client = openai.OpenAI(base_url=srv.base_url + "/v1", api_key="unused", max_retries=0)
    for png in tmp_path.glob("*.png"):
        prm = read_parameters(png)
        body = {"seed": prm["seed"], "steps": prm["steps"], "guidance": prm["guidance"], "sampler": prm["sampler"]}
        r = gen_req(srv, **body)
        assert r.status_code == 200, r.text
        assert np.array_equal(pixels(r.json()["data"][0]["b64_json"]), np.asarray(read_image(png)))
        res = client.images.generate(prompt="red heart", response_format="b64_json", extra_body=body)
        assert np.array_equal(pixels(res.data[0].b64_json), np.asarray(read_image(png)))


# --- fault 6: the link store holds linked images only ------------------------------------------

def test_issue_example_b64_answers_do_not_evict_a_link(srv):
    url = gen_req(srv, response_format="url").json()["data"][0]["url"]
    for _ in range(4):  # --keep-images 4 default b64_json answers
        assert gen_req(srv).status_code == 200
    assert srv.client.get(url).status_code == 200
    assert srv.service.store.stats()["url_images"] == 1


def test_the_documented_cap_on_linked_images_evicts_the_oldest(srv):
    first = gen_req(srv, response_format="url").json()["data"][0]["url"]
    later = [d["url"] for d in gen_req(srv, response_format="url", n=4).json()["data"]]
    assert srv.client.get(first).status_code == 404                   # the 5th linked image pushed it out
    assert all(srv.client.get(u).status_code == 200 for u in later)
    assert srv.service.store.stats()["url_images"] == 4


def test_jobs_always_link(srv):
    job = srv.client.post("/v1/jobs", json={"prompt": "red heart", "steps": STEPS}).json()
    done = srv.wait_job(job["id"])
    assert done["state"] == "done" and "b64_json" in done["data"][0]
    events = srv.client.get(f"/v1/jobs/{job['id']}/events").text   # the stream links the same images
    assert "/images/" in events


# --- fault 7: fields real OpenAI clients send --------------------------------------------------

def test_issue_example_size_auto(srv):
    r = gen_req(srv, size="auto")
    assert r.status_code == 200, r.text
    assert read_image(base64.b64decode(r.json()["data"][0]["b64_json"])).size == (32, 32)
    assert r.json()["size"] == "32x32" and r.json()["output_format"] == "png"


@pytest.mark.parametrize("field, value", [
    ("output_format", "png"), ("background", "auto"), ("background", "opaque"), ("moderation", "auto"),
    ("moderation", "low"), ("quality", "auto"), ("quality", "high"), ("style", "vivid"), ("complexity", "low"),
    ("user", "u-1"), ("safety_identifier", "hash"), ("stream", False), ("partial_images", 0),
])
def test_documented_values_are_accepted(srv, field, value):
    r = gen_req(srv, **{field: value})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("field, value, says", [
    ("output_format", "jpeg", "accepted: png"), ("output_format", "webp", "accepted: png"),
    ("background", "transparent", "accepted: auto, opaque"), ("quality", "ultra", "accepted: auto"),
    ("size", "1024x1024", "supported sizes: 32x32 or auto"), ("stream", True, "/v1/jobs"),
    ("partial_images", 2, "streaming"), ("output_compression", 50, "PNG"), ("frame_count", 4, "GIF"),
    ("frame_duration_ms", 100, "GIF"), ("svg", {"model": "x"}, "SVG"),
])
def test_values_that_cannot_be_honoured_are_a_clear_400(srv, field, value, says):
    r = gen_req(srv, **{field: value})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == field and says in err["message"], err


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(sorted(OPENAI_CHOICES)), st.one_of(
    st.sampled_from(sorted({v for acc, _ in OPENAI_CHOICES.values() for v in acc})),
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)))
def test_choice_fields_property(srv, field, value):
    """Property: a choice field gets 200 exactly for its accepted values, else a 400 that names it
    and lists them."""
    r = gen_req(srv, **{field: value})
    accepted, _ = OPENAI_CHOICES[field]
    if value in accepted:
        assert r.status_code == 200, r.text
    else:
        assert r.status_code == 400 and r.json()["error"]["param"] == field
        assert "accepted: " + ", ".join(accepted) in r.json()["error"]["message"]


def test_every_field_of_the_real_client_is_known():
    """Each parameter the installed openai client's images.generate can send is a field of the
    request schema (honoured, no-op or refused with its own message), never 'unknown parameter'."""
    params = set(inspect.signature(openai.OpenAI(api_key="x").images.generate).parameters)
    sent = params - {"extra_headers", "extra_query", "extra_body", "timeout"}
    assert sent <= set(ImageRequest.model_fields), sent - set(ImageRequest.model_fields)
    handled = set(OPENAI_CHOICES) | set(OPENAI_REFUSED) | {"prompt", "model", "n", "size", "response_format",
                                                           "user", "safety_identifier",
                                                           "style"}  # STYLE_HINTS, else a style phrase
    assert sent <= handled


def test_real_client_with_its_documented_defaults(srv):
    client = openai.OpenAI(base_url=srv.base_url + "/v1", api_key="unused", max_retries=0)
    res = client.images.generate(prompt="red heart", size="auto", output_format="png", background="auto",
                                 moderation="auto", quality="auto", n=1, response_format="b64_json",
                                 extra_body={"steps": STEPS})
    assert res.output_format == "png" and res.size == "32x32" and len(res.data) == 1
    with pytest.raises(openai.BadRequestError, match="accepted: png"):
        client.images.generate(prompt="red heart", output_format="jpeg", extra_body={"steps": STEPS})


def test_openapi_lists_the_accepted_values(srv):
    props = srv.client.get("/openapi.json").json()["components"]["schemas"]["ImageRequest"]["properties"]
    assert props["size"]["anyOf"][0]["enum"] == ["32x32", "auto"]
    assert props["output_format"]["anyOf"][0]["enum"] == ["png"]
    assert props["seed"]["anyOf"][0]["maximum"] == SEED_MAX


def test_web_page_sends_and_shows_the_largest_seeds_exactly(srv):
    """JavaScript numbers hold integers exactly only below 2^53: the page sends the seed's digits
    and reads seeds back from the JSON text, so 2^63 - 2 and 2^63 - 1 arrive and show unrounded."""
    from test_serve_browser import ARGS, CHROMIUM

    sync_api = pytest.importorskip("playwright.sync_api")
    if not __import__("pathlib").Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is absent")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page()
            page.goto(srv.base_url + "/")
            page.wait_for_function("document.querySelector('#sampler').options.length > 0")
            page.fill("#prompt", "red heart")
            page.fill("#n", "2")
            page.fill("#seed", str(SEED_MAX - 1))
            page.fill("#steps", str(STEPS))
            page.click("#generate")
            page.wait_for_selector(".job.done", timeout=60_000)
            captions = [c.split(" ·")[0] for c in page.locator(".job figcaption").all_inner_texts()]
            assert captions == [f"seed {SEED_MAX - 1}", f"seed {SEED_MAX}"]
        finally:
            browser.close()
