"""Images in over HTTP against a live server with real tiny models: the official OpenAI client's
images.edit (with and without a mask, OpenAI's transparent-mask convention) and
images.create_variation, exactly as it builds its multipart requests; the job form the page
uses; an upscaler model behind the edits endpoint; and the same limits and errors as generations
(413 for an oversize file, 400 naming the field for unreadable, non-square, oversize or
mismatched images, unknown fields and models that cannot edit)."""
from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image

from conftest_serve import STEPS, live_server, tiny_generator

openai = pytest.importorskip("openai")


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    import blinkgen
    from blinkgen.families import get

    up = blinkgen.load(str(get("upscaler").make_tiny(tmp_path_factory.mktemp("up") / "up", image_size=64)))
    with live_server({"tiny": tiny_generator(), "up": up}, batch_window_ms=5, max_upload_bytes=200_000,
                     max_upload_side=256) as live:
        yield live


def png(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def picture(side: int = 32, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8))


def openai_mask(side: int = 32) -> Image.Image:
    """OpenAI's convention: a copy of the image, transparent where it must be repainted."""
    m = Image.new("RGBA", (side, side), (255, 255, 255, 255))
    m.paste((0, 0, 0, 0), (side // 4, side // 4, 3 * side // 4, 3 * side // 4))
    return m


def decode(b64: str) -> Image.Image:
    im = Image.open(io.BytesIO(base64.b64decode(b64)))
    im.load()
    return im


@pytest.fixture(scope="module")
def client(srv):
    return openai.OpenAI(base_url=srv.base_url + "/v1", api_key="unused", max_retries=0)


def test_openai_client_inpaints_and_keeps_the_unmasked_pixels(srv, client):
    im = picture()
    res = client.images.edit(model="tiny", image=("in.png", png(im), "image/png"),
                             mask=("mask.png", png(openai_mask()), "image/png"), prompt="a red circle", n=2,
                             size="32x32", response_format="b64_json", extra_body={"seed": 5, "steps": STEPS})
    assert len(res.data) == 2
    keep = np.ones((32, 32), bool)
    keep[8:24, 8:24] = False
    for i, d in enumerate(res.data):
        out = decode(d.b64_json)
        a = np.asarray(out)
        assert out.size == (32, 32) and np.array_equal(a[keep], np.asarray(im)[keep])  # kept: exactly the input
        assert np.abs(a[~keep].astype(int) - np.asarray(im)[~keep]).mean() > 1  # the hole was repainted
        params = json.loads(out.text["parameters"])
        assert params["seed"] == 5 + i and params["edit"] == "inpaint" and params["prompt"] == "a red circle"


def test_openai_client_img2img_with_strength_and_the_page_form(srv, client):
    im = picture(48, seed=1)  # another square size: resampled to the model's
    a = client.images.edit(model="tiny", image=("in.png", png(im), "image/png"), prompt="a blue square",
                           response_format="b64_json", extra_body={"seed": 2, "steps": STEPS, "strength": 0.5})
    again = client.images.edit(model="tiny", image=[("in.png", png(im), "image/png")], prompt="a blue square",
                               response_format="b64_json", extra_body={"seed": 2, "steps": STEPS, "strength": 0.5})
    assert a.data[0].b64_json == again.data[0].b64_json  # a list of one image (image[]) is the same request
    out = decode(a.data[0].b64_json)
    assert json.loads(out.text["parameters"])["strength"] == 0.5
    job = srv.client.post("/v1/jobs/edits", files={"image": ("in.png", png(im), "image/png")},
                          data={"prompt": "a blue square", "seed": "2", "steps": str(STEPS), "strength": "0.5",
                                "response_format": "url"})
    assert job.status_code == 202, job.text
    done = srv.wait_job(job.json()["id"])
    assert done["state"] == "done" and done["progress"]["fraction"] == 1.0
    png_url = done["data"][0]["url"]
    assert srv.client.get(png_url).content == base64.b64decode(a.data[0].b64_json)  # the same image both ways


def test_openai_client_variation_reports_its_caption(srv, client):
    res = client.images.create_variation(model="tiny", image=("in.png", png(picture(seed=3)), "image/png"), n=1,
                                         response_format="b64_json", extra_body={"seed": 1, "steps": STEPS})
    d = res.data[0]
    assert d.revised_prompt and decode(d.b64_json).size == (32, 32)
    params = json.loads(decode(d.b64_json).text["parameters"])
    assert params["prompt"] == d.revised_prompt and params["edit"] == "variation"


def test_upscaler_behind_the_edits_endpoint(srv, client):
    res = client.images.edit(model="up", image=("in.png", png(picture()), "image/png"), prompt="upscale",
                             response_format="b64_json")
    assert decode(res.data[0].b64_json).size == (64, 64)
    r = srv.client.post("/v1/images/generations", json={"prompt": "a", "model": "up"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "model_needs_image"


def err(r, status: int, param: str | None = None) -> dict:
    assert r.status_code == status, r.text
    e = r.json()["error"]
    assert "\n" not in e["message"] and (param is None or e["param"] == param), e
    return e


def test_limits_and_errors_are_the_generations_ones(srv, client):
    post = lambda files, data=None, path="/v1/images/edits": srv.client.post(path, files=files,  # noqa: E731
                                                                             data=data or {"prompt": "a"})
    big = Image.fromarray(np.random.default_rng(0).integers(0, 256, (250, 250, 3), dtype=np.uint8))
    e = err(post({"image": ("b.png", png(big) * 2, "image/png")}), 413, "image")  # a file over the upload cap
    assert "200000" in e["message"]
    err(srv.client.post("/v1/images/edits", content=b"x" * 500_000,
                        headers={"content-type": "multipart/form-data; boundary=x"}), 413)  # body over the cap
    err(post({"image": ("a.png", b"not an image at all", "image/png")}), 400, "image")
    err(post({"image": ("a.png", png(Image.new("RGB", (300, 300))), "image/png")}), 400, "image")  # > max_upload_side
    assert "square" in err(post({"image": ("a.png", png(Image.new("RGB", (32, 20))), "image/png")}), 400, "image")["message"]
    e = err(post({"image": ("a.png", png(picture()), "image/png"), "mask": ("m.png", png(openai_mask(16)), "image/png")}),
            400, "mask")
    assert "same size" in e["message"]
    err(post({}), 400, "image")
    err(post({"image": ("a.png", png(picture()), "image/png")}, {"prompt": "a", "stpes": "3"}), 400, "stpes")
    err(post({"image": ("a.png", png(picture()), "image/png")}, {"prompt": "a", "strength": "1.5"}), 400, "strength")
    err(post({"image": ("a.png", png(picture()), "image/png")}, {"prompt": "a", "n": "two"}), 400, "n")
    err(post({"image": ("a.png", png(picture()), "image/png")}, {"prompt": "  "}), 400, "prompt")
    with pytest.raises(openai.BadRequestError, match="does not take a mask"):
        client.images.edit(model="up", image=("a.png", png(picture()), "image/png"), prompt="a",
                           mask=("m.png", png(openai_mask()), "image/png"))


def test_every_key_in_supports_is_accepted_by_the_endpoints_it_is_listed_for(srv):
    from test_serve_supports import assert_listing_matches_endpoints

    assert assert_listing_matches_endpoints(srv) > 0  # the upscaler too: images only, no generations
