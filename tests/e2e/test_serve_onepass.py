"""The GAN and VAE families behind the same server as the default (diffusion) model: the three are
served side by side, reached with the real OpenAI client, each image equal to the one the
library makes for the same prompt and seed, and settings a one-pass model lacks are clear 400s."""
from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image

import blinkgen
from conftest import make_tiny
from conftest_serve import live_server

openai = pytest.importorskip("openai")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve-onepass")
    gens = {"default": blinkgen.load("default"),
            "gan": blinkgen.load(str(make_tiny("gan", root / "gan", image_size=64))),
            "vae": blinkgen.load(str(make_tiny("vae", root / "vae", image_size=64)))}
    with live_server(gens) as live:
        yield live, gens


def test_gan_and_vae_beside_the_default_model_answer_the_openai_client(srv):
    live, gens = srv
    client = openai.OpenAI(base_url=live.base_url + "/v1", api_key="unused", max_retries=0)
    assert sorted(m.id for m in client.models.list()) == ["default", "gan", "vae"]
    for model, extra in (("gan", {"seed": 3}), ("vae", {"seed": 3}), ("default", {"seed": 3, "steps": 2})):
        res = client.images.generate(model=model, prompt="red heart", n=2, size="64x64",
                                     response_format="b64_json", extra_body=extra)
        ims = [Image.open(io.BytesIO(base64.b64decode(d.b64_json))) for d in res.data]
        params = json.loads(ims[0].text["parameters"])
        assert params["model"] == model and params["seed"] == 3
        assert params["sampler"] == {"gan": "onepass", "vae": "prior", "default": gens["default"].defaults.sampler}[model]
        want = gens[model].generate("red heart", n=2, seed=3, steps=extra.get("steps"))
        assert all(np.array_equal(np.asarray(a.convert("RGB")), np.asarray(b)) for a, b in zip(ims, want))


def test_models_card_and_400s_for_settings_a_one_pass_model_lacks(srv):
    live, _ = srv
    cards = {m["id"]: m for m in live.client.get("/v1/models").json()["data"]}
    assert cards["gan"]["family"] == "gan" and cards["gan"]["max_steps"] == 1 and cards["vae"]["samplers"] == ["prior"]
    for model in ("gan", "vae"):
        r = live.client.post("/v1/images/generations", json={"model": model, "prompt": "x", "steps": 4})
        assert r.status_code == 400 and "steps" in r.json()["error"]["message"]
        r = live.client.post("/v1/images/generations", json={"model": model, "prompt": "x", "guidance": 3})
        assert r.status_code == 400 and "guidance" in r.json()["error"]["message"]
        r = live.client.post("/v1/images/generations", json={"model": model, "prompt": "x", "sampler": "euler"})
        assert r.status_code == 400 and "sampler" in r.json()["error"]["message"]


def test_every_key_in_supports_is_accepted_by_the_endpoints_it_is_listed_for(srv):
    from test_serve_supports import assert_listing_matches_endpoints

    assert assert_listing_matches_endpoints(srv[0]) > 0
