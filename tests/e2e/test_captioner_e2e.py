"""The generative captioner end to end (issue 13): a tiny one trains with the one loop through the
real CLI (`train --family captioner`) on shapes pictures and writes text that the shapes grammar
parses; `caption --generate` prints what the Python API writes; `blinkgen eval` captions its
images and compares with the prompts; a captioner is refused with an evaluator it was not trained
on, and is not a generator."""
from __future__ import annotations

import json

import pytest
import torch

from blinkgen.data.shapes import make_shapes
from blinkgen.errors import ModelLoadError
from blinkgen.eval.caption_metrics import parse_or_none
from blinkgen.eval.captioner import load_captioner
from conftest import make_tiny, run_cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("cap") / "run"
    run_cli("train", "--family", "captioner", "--data", "shapes:400", "--preset", "tiny", "--steps", 150,
            "--batch-size", 32, "--lr", "3e-3", "--warmup", 10, "--eval-every", 75, "--sample-every", 150,
            "--threads", 1, "--out", out)
    return out


def test_trains_with_the_one_loop_and_records_its_evaluator(trained):
    m = trained / "model"
    assert sorted(p.name for p in m.iterdir()) == ["config.json", "model.safetensors", "vocab.json"]
    cfg = json.loads((m / "config.json").read_text())
    assert cfg["family"] == "captioner" and cfg["training"]["steps"] == 150 and len(cfg["image_encoder"]["sha256"]) == 64
    vocab = json.loads((m / "vocab.json").read_text())["tokens"]
    assert vocab[:4] == ["<pad>", "<bos>", "<eos>", "<unk>"] and " circle" in vocab
    hist = [json.loads(x) for x in (trained / "val_history.jsonl").read_text().splitlines()]
    assert [h["step"] for h in hist] == [75, 150] and hist[-1]["val_loss"] < hist[0]["val_loss"]
    assert (trained / "samples" / "step-00000150.png").is_file()


def test_writes_text_the_shapes_grammar_parses(trained, tmp_path):
    writer = load_captioner(trained / "model")
    pics = make_shapes(8, seed=99, size=64)  # scenes it never saw
    written = writer.write(pics.images, beams=1)
    assert all(isinstance(w, str) and w for w in written)
    assert sum(parse_or_none(w) is not None for w in written) >= 6, written
    assert writer.write(pics.images[:3], beams=1) == written[:3]  # a caption does not depend on batch-mates
    png = tmp_path / "x.png"
    from PIL import Image

    Image.fromarray(pics.images[0].permute(1, 2, 0).numpy()).save(png)
    r = run_cli("caption", png, "--generate", "--captioner", trained / "model", "--beams", 1)
    assert r.stdout.strip() == written[0]
    r = run_cli("caption", png, "--generate", "--candidates", png, check=False)
    assert r.returncode == 2 and "choose one" in r.stderr


def test_eval_captions_its_images_and_compares_with_the_prompts(trained, tmp_path):
    from blinkgen.eval.evaluate import evaluate

    torch.set_num_threads(1)
    model = make_tiny("diffusion", tmp_path / "tiny", image_size=64)
    r = evaluate(model, "shapes:200", samples=4, steps=2, batch_size=4, captioner=trained / "model",
                 out_dir=tmp_path / "ev")
    cap = r["metrics"]["caption"]
    assert cap["n"] == 4 and 0 <= cap["exact"] <= 1 and -1 <= cap["similarity"] <= 1
    assert cap["shapes"]["n"] == 4 and len(cap["examples"]) == 4
    assert "captioned image = prompt" in (tmp_path / "ev" / "report.md").read_text()
    assert "caption" not in evaluate(model, "shapes:200", samples=2, steps=2, captioner=None)["metrics"]


def test_a_captioner_needs_its_own_evaluator_and_is_not_a_generator(trained, tmp_path):
    from blinkgen.eval import contrastive as C
    from blinkgen.models.clip import CLIP_PRESETS, ContrastiveModel

    other = C.save_evaluator(tmp_path / "ev", ContrastiveModel(CLIP_PRESETS["tiny"]).eval(), {})
    with pytest.raises(ModelLoadError, match="trained on the features of evaluator"):
        load_captioner(trained / "model", evaluator=other)
    r = run_cli("generate", "x", "--model", trained / "model", check=False)
    assert r.returncode == 2 and "captioner" in r.stderr and "Traceback" not in r.stderr
    assert "captioner" in run_cli("train", "--help").stdout
