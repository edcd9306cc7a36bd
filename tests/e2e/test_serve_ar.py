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
