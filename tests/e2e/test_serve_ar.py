"""The LLM family behind the same server: a causal AR model and a masked-mode (parallel) model are
served next to each other, reached with the real OpenAI client, and a sampler the model lacks is
a clear 400, not a crash."""
from __future__ import annotations

import base64
import io
import json

import pytest
from PIL import Image

import blinkgen
from conftest import make_tiny
from conftest_serve import live_server

openai = pytest.importorskip("openai")


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve-ar")
    gens = {"ar": blinkgen.load(str(make_tiny("ar", root / "ar"))),
            "mg": blinkgen.load(str(make_tiny("ar", root / "mg", objective="masked")))}
    with live_server(gens) as live:
        yield live


def test_both_ar_modes_answer_the_openai_client(srv):
    client = openai.OpenAI(base_url=srv.base_url + "/v1", api_key="unused", max_retries=0)
    assert sorted(m.id for m in client.models.list()) == ["ar", "mg"]
    for model, extra in (("ar", {"seed": 3}), ("mg", {"seed": 3, "steps": 4, "sampler": "maskgit"})):
        res = client.images.generate(model=model, prompt="a red circle", n=2, size="32x32",
                                     response_format="b64_json", extra_body=extra)
        ims = [Image.open(io.BytesIO(base64.b64decode(d.b64_json))) for d in res.data]
        assert [im.size for im in ims] == [(32, 32), (32, 32)]
        params = json.loads(ims[0].text["parameters"])
        assert params["seed"] == 3 and params["model"] == model
        if model == "mg":
            assert params["steps"] == 4 and params["sampler"] == "maskgit"


def test_a_sampler_the_model_lacks_is_a_400(srv):
    r = srv.client.post("/v1/images/generations", json={"model": "mg", "prompt": "x", "sampler": "cached"})
    assert r.status_code == 400 and "maskgit" in r.json()["error"]["message"]
    r = srv.client.post("/v1/images/generations", json={"model": "mg", "prompt": "x", "steps": 17})
    assert r.status_code == 400 and "steps" in r.json()["error"]["message"]


def test_every_key_in_supports_is_accepted_by_the_endpoints_it_is_listed_for(srv):
    from test_serve_supports import assert_listing_matches_endpoints

    assert assert_listing_matches_endpoints(srv) > 0


def test_style_on_a_model_without_style_phrases(srv):
    """The AR family draws no style phrase: OpenAI's hints and "none" are no-ops, a phrase is a 400."""
    for style in ("vivid", "natural", "none"):
        r = srv.client.post("/v1/images/generations", json={"model": "ar", "prompt": "x", "seed": 1, "style": style})
        assert r.status_code == 200, (style, r.text)
    r = srv.client.post("/v1/images/generations", json={"model": "ar", "prompt": "x", "style": "twemoji"})
    err = r.json()["error"]
    assert r.status_code == 400 and err["param"] == "style" and "vivid" in err["message"], err
