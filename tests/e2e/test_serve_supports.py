"""What /v1/models says a model supports is what the endpoints accept (the listing and the request
schemas must not drift apart again), the `style` key shared by OpenAI (vivid/natural hints) and
blinkgen (a style phrase), variation seeds on generations giving the Python API's and the CLI's
bytes, a finished job's final progress, and an error code on every 400."""
from __future__ import annotations

import base64
import copy
import io

import numpy as np
import pytest
from PIL import Image

import blinkgen
from blinkgen.data.image_io import read_image
from blinkgen.pngmeta import parameters_from_bytes, png_bytes, read_parameters
from conftest import run_cli
from conftest_serve import STEPS, live_server, tiny_generator

STYLES = ("twemoji", "noto emoji")


def styled_copy(gen):
    """The tiny model as if it had been trained on STYLES (shares the network: nothing is copied)."""
    g = copy.copy(gen)
    g.styles = STYLES
    return g


@pytest.fixture(scope="module")
def srv():
    gen = tiny_generator()
    with live_server({"tiny": gen, "styled": styled_copy(gen)}) as live:
        yield live


def gen_req(srv, path="/v1/images/generations", **body):
    return srv.client.post(path, json={"prompt": "red heart", "steps": STEPS, **body})


def png_file(side: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def mask_file(side: int) -> bytes:
    m = Image.new("RGBA", (side, side), (255, 255, 255, 255))
    m.paste((0, 0, 0, 0), (side // 4, side // 4, 3 * side // 4, 3 * side // 4))
    buf = io.BytesIO()
    m.save(buf, "PNG")
    return buf.getvalue()


def b64_png(r) -> bytes:
    return base64.b64decode(r.json()["data"][0]["b64_json"])


# A valid value of every key a model card may list; a new key without one fails the drift test.
def sample_values(card: dict) -> dict:
    return {"negative_prompt": {"negative_prompt": "blue"},
            "style": {"style": (card.get("styles") or ["twemoji"])[0]},
            "cache": {"cache": "deep:2"},
            "variation_seed": {"variation_seed": 9, "variation_strength": 0.3},
            "variation_strength": {"variation_seed": 9, "variation_strength": 0.3},
            "image": {}, "mask": {"mask": "FILE"}, "strength": {"strength": 0.5}}


def send(srv, card: dict, path: str, fields: dict):
    """One request with `fields` to `path`: JSON for generations/jobs, OpenAI's form for uploads."""
    base = {"model": card["id"], "prompt": "red heart", "steps": min(STEPS, card["max_steps"])}
    if path in ("/v1/images/generations", "/v1/jobs"):
        return srv.client.post(path, json={**base, **fields})
    gen = srv.service.generators[card["id"]]
    side = getattr(gen, "input_size", gen.image_size)  # an upscaler takes smaller images than it makes
    files = {"image": ("in.png", png_file(side), "image/png")}
    data = {k: str(v) for k, v in {**base, **fields}.items() if k != "mask"}
    if "mask" in fields:
        files["mask"] = ("mask.png", mask_file(side), "image/png")
    return srv.client.post(path, data=data, files=files)


# --- 1. the models listing and the endpoints agree ---------------------------------------------

def assert_listing_matches_endpoints(srv) -> int:
    """Send every key each model card lists to every endpoint it lists it for (with the model's
    other request fields at cheap values): each must be accepted and, for a job, finish. Returns
    the number of requests sent. test_serve_ar and test_serve_onepass run it on their families."""
    cards = srv.client.get("/v1/models").json()["data"]
    tried = 0
    for card in cards:
        assert set(card["supports"]) == set(card["endpoints"]), card  # each key says where it goes
        values = sample_values(card)
        for key in card["supports"]:
            assert key in values, f"no sample value for the listed key {key!r}: add one to this test"
            assert card["endpoints"][key], (card["id"], key)
            for path in card["endpoints"][key]:
                r = send(srv, card, path, values[key])
                assert r.status_code in (200, 202), (card["id"], key, path, r.text[:300])
                if r.status_code == 202:
                    assert srv.wait_job(r.json()["id"])["state"] == "done", (card["id"], key, path)
                tried += 1
    return tried


def test_every_key_in_supports_is_accepted_by_the_endpoints_it_is_listed_for(srv):
    assert assert_listing_matches_endpoints(srv) >= 20


def test_every_family_feature_is_served_or_says_why_not():
    """A family that gains a feature must decide how the server carries it (schemas.SERVED_FEATURES)
    or say why it does not (UNSERVED_FEATURES), so the card never silently omits a new one."""
    from blinkgen.families import all_families
    from blinkgen.serve.schemas import SERVED_FEATURES, UNSERVED_FEATURES

    for fam in all_families():
        extra = set(fam.pipeline_class().supports) - set(SERVED_FEATURES) - set(UNSERVED_FEATURES)
        assert not extra, (fam.name, extra)


def test_the_listing_names_what_the_tiny_diffusion_model_takes(srv):
    card = next(c for c in srv.client.get("/v1/models").json()["data"] if c["id"] == "tiny")
    gen_paths = ["/v1/images/generations", "/v1/jobs"]
    for key in ("style", "cache", "negative_prompt", "variation_seed", "variation_strength"):
        assert set(gen_paths) <= set(card["endpoints"][key]), (key, card["endpoints"])
    assert "lora" not in card["supports"]  # adapters are served as models of their own ("name+adapter")
    assert "/v1/images/edits" in card["endpoints"]["mask"]


def test_keys_the_listing_does_not_give_an_endpoint_are_refused_there(srv):
    form = {"prompt": "red heart", "steps": str(STEPS), "variation_seed": "9", "variation_strength": "0.3"}
    r = srv.client.post("/v1/images/edits", data=form, files={"image": ("in.png", png_file(32), "image/png")})
    assert r.status_code == 400 and r.json()["error"]["param"] == "variation_seed", r.text


# --- 1b. style: OpenAI's hints and blinkgen's phrases ------------------------------------------

def test_openai_style_hints_are_no_ops(srv):
    plain = b64_png(gen_req(srv, seed=3))
    for hint in ("vivid", "natural"):
        r = gen_req(srv, seed=3, style=hint)
        assert r.status_code == 200, r.text
        assert b64_png(r) == plain


def test_style_phrase_reaches_the_model_and_the_png(srv):
    gen = tiny_generator()
    r = gen_req(srv, seed=3, style="noto emoji", model="styled")
    assert r.status_code == 200, r.text
    assert parameters_from_bytes(b64_png(r))["style"] == "noto emoji"
    g = styled_copy(gen)
    settings = g.settings(steps=STEPS, style="noto emoji")
    im = g.sample([blinkgen.Request("red heart", 3)], settings).images[0]
    assert np.array_equal(np.asarray(read_image(b64_png(r))), np.asarray(im))


@pytest.mark.parametrize("path", ["/v1/images/generations", "/v1/jobs"])
def test_unknown_style_is_a_one_line_400_listing_both_kinds(srv, path):
    r = gen_req(srv, path, style="watercolour", model="styled")
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == "style" and err["code"] and "\n" not in err["message"], err
    for word in ("watercolour", *STYLES, "vivid", "natural"):
        assert word in err["message"], err


# --- 1c. variation seeds: the Python API's bytes, and a CLI PNG replayed -----------------------

def test_variation_seed_gives_the_pipelines_bytes(srv):
    gen = tiny_generator()
    body = dict(seed=7, n=2, variation_seed=100, variation_strength=0.25, sampler="euler_a")
    r = gen_req(srv, **body)
    assert r.status_code == 200, r.text
    settings = gen.settings(steps=STEPS, sampler="euler_a")
    reqs = [blinkgen.Request("red heart", 7 + i, variation_seed=100 + i, variation_strength=0.25) for i in range(2)]
    images = gen.sample(reqs, settings).images
    for d, req, im in zip(r.json()["data"], reqs, images):
        assert d["seed"] == req.seed
        want = png_bytes(im, gen.png_parameters(req.prompt, req.seed, settings, req))
        assert base64.b64decode(d["b64_json"]) == want  # pixels and the recorded parameters
    plain = gen_req(srv, seed=7, sampler="euler_a")
    assert b64_png(plain) != base64.b64decode(r.json()["data"][0]["b64_json"])


def test_variation_seed_and_strength_go_together(srv):
    for body in ({"variation_seed": 3}, {"variation_strength": 0.5}):
        r = gen_req(srv, **body)
        assert r.status_code == 400 and r.json()["error"]["code"], r.text
    r = gen_req(srv, variation_seed=3, variation_strength=1.5)
    assert r.status_code == 400 and r.json()["error"]["param"] == "variation_strength", r.text


def test_cli_png_with_a_variation_seed_reproduces_through_the_server(srv, tmp_path):
    folder = tiny_generator().folder
    run_cli("generate", "red heart", "--model", folder, "--seed", 7, "--variation-seed", 100,
            "--variation-strength", 0.2, "--steps", STEPS, "-o", tmp_path / "v.png")
    prm = read_parameters(tmp_path / "v.png")
    body = {k: prm[k] for k in ("seed", "steps", "guidance", "sampler", "variation_seed", "variation_strength")}
    r = srv.client.post("/v1/images/generations", json={"prompt": prm["prompt"], **body})
    assert r.status_code == 200, r.text
    assert np.array_equal(np.asarray(read_image(b64_png(r))), np.asarray(read_image(tmp_path / "v.png")))


# --- 2. a finished job reports its final step --------------------------------------------------

def test_finished_job_reports_the_final_step(srv):
    job = gen_req(srv, "/v1/jobs", steps=3, n=2).json()
    done = srv.wait_job(job["id"])
    assert done["state"] == "done"
    assert done["progress"]["step"] == done["progress"]["steps"] == 3, done["progress"]
    assert done["progress"]["fraction"] == 1.0
