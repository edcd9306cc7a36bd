"""A new family is one package plus one registry entry: the test-only "constant colour" family
(tests/constant_family) trains, loads, samples and serves through the real CLI and the real
server, registered only through BLINKGEN_EXTRA_FAMILIES -- no file of blinkgen names it."""
from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

import blinkgen
from conftest import FAMILY_ENV, TESTS_DIR, run_cli
from conftest_serve import free_port

pytestmark = pytest.mark.slow
SRC = Path(blinkgen.__file__).resolve().parent


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("constant") / "run"
    run_cli("train", "--family", "constant", "--data", "shapes:40", "--size", 32, "--preset", "tiny",
            "--steps", 12, "--batch-size", 8, "--lr", "1e-2", "--eval-every", 6, "--ckpt-every", 6,
            "--sample-every", 12, "--log-every", 3, "--out", out, env=FAMILY_ENV)
    return out


def test_the_family_lives_in_its_package_only():
    """Nothing under src/blinkgen knows the test family; the family needs nothing but its package."""
    hits = [p for p in SRC.rglob("*.py") if "constant_family" in p.read_text() or '"constant"' in p.read_text()]
    assert hits == []
    assert sorted(p.name for p in (TESTS_DIR / "constant_family").glob("*.py")) == [
        "__init__.py", "folder.py", "pipeline.py", "tasks.py"]


def test_cli_knows_it_only_when_registered():
    help_text = run_cli("generate", "--help", env=FAMILY_ENV).stdout
    assert "constant: flat" in help_text
    r = run_cli("train", "--family", "constant", "--out", "unused", check=False)  # not registered here
    assert r.returncode == 2 and "family must be one of" in r.stderr and "Traceback" not in r.stderr


def test_trains_through_the_cli_with_the_one_loop(trained):
    cfg = json.loads((trained / "model" / "config.json").read_text())
    assert cfg["family"] == "constant" and cfg["training"]["steps"] == 12
    assert (trained / "checkpoints" / "step-00000012" / "optimizer.model.safetensors").is_file()
    assert (trained / "samples" / "step-00000012.png").is_file()
    assert json.loads((trained / "train_config.json").read_text())["family"] == "constant"


def test_generates_through_the_cli_and_python_alike(trained, tmp_path):
    png = tmp_path / "x.png"
    run_cli("generate", "a red circle", "--model", trained / "model", "--seed", 4, "-o", png, env=FAMILY_ENV)
    pipe = blinkgen.load(str(trained / "model"))  # registered in this process by conftest
    assert pipe.family == "constant"
    with Image.open(png) as im:
        assert json.loads(im.text["parameters"])["sampler"] == "flat"
        assert np.array_equal(np.asarray(im.convert("RGB")), np.asarray(pipe.generate("a red circle", seed=4)[0]))


def test_serves_through_the_real_server(trained):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "blinkgen.cli", "serve", "--model", str(trained / "model"),
                             "--port", str(port)], env=FAMILY_ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(base + "/ready", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, proc.stderr.read()[-3000:]
            assert time.monotonic() < deadline, "server did not become ready"
            time.sleep(0.1)
        models = httpx.get(base + "/v1/models").json()["data"]
        assert [(m["family"], m["samplers"]) for m in models] == [("constant", ["flat"])]
        r = httpx.post(base + "/v1/images/generations", timeout=60,
                       json={"prompt": "a red circle", "n": 2, "seed": 4, "response_format": "b64_json"})
        assert r.status_code == 200, r.text
        ims = [Image.open(io.BytesIO(base64.b64decode(d["b64_json"]))).convert("RGB") for d in r.json()["data"]]
        want = blinkgen.load(str(trained / "model")).generate("a red circle", n=2, seed=4)
        assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(ims, want))
        bad = httpx.post(base + "/v1/images/generations", json={"prompt": "x", "sampler": "euler"})
        assert bad.status_code == 400 and "flat" in bad.json()["error"]["message"]
    finally:
        proc.terminate()
        proc.wait(timeout=60)
