"""evaluate(): two runs give identical numbers; the outputs are written; the prompt rule is the
held-out split's; the CLI wires through. Tiny model, tiny data, an untrained tiny evaluator."""
from __future__ import annotations

import json

import pytest
import torch

from blinkgen.eval import contrastive as C
from blinkgen.models.clip import CLIP_PRESETS, ContrastiveModel
from conftest import make_tiny

DATA = "shapes:200"  # 4 held-out images at the training split's 2%


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("ev")
    torch.manual_seed(0)
    ev = C.save_evaluator(root / "evaluator", ContrastiveModel(CLIP_PRESETS["tiny"]).eval(), {})
    return make_tiny("diffusion", root / "tiny"), ev, root


def _numbers(r: dict) -> dict:
    return {k: v for k, v in r.items() if k not in ("timing",)}


def test_two_runs_give_identical_numbers_and_write_reports(setup):
    from blinkgen.data.registry import load_dataset
    from blinkgen.eval.evaluate import evaluate

    model, ev, root = setup
    kw = dict(samples=6, seed=3, steps=2, evaluator=ev, batch_size=4)
    a = evaluate(model, DATA, out_dir=root / "a", **kw)
    b = evaluate(model, DATA, out_dir=root / "b", **kw)
    assert json.dumps(_numbers(a), sort_keys=True) == json.dumps(_numbers(b), sort_keys=True)
    m = a["metrics"]
    for key in ("fd", "kid", "alignment", "retrieval_R@1", "retrieval_R@5", "precision", "recall"):
        assert key in m or key in ("precision", "recall")  # P/R needs more real images than k
    assert m["n"] == 6 and m["shapes"]["n_overall"] == 6  # every held-out prompt is a shapes caption
    for f in ("metrics.json", "report.md", "grid.png", "prompts.txt"):
        assert (root / "a" / f).is_file()
    prompts = (root / "a" / "prompts.txt").read_text().splitlines()
    held = C.held_out_split(load_dataset(DATA, 32, 0), 0)[1]
    assert sorted(prompts[:len(held)]) == sorted(c[0] for c in held.captions) and len(prompts) == 6
    assert prompts[len(held):] == prompts[:6 - len(held)]  # cycled
    assert a["versions"]["torch"] == torch.__version__ and a["evaluator"]["sha256"]


def test_prompt_file_and_seed_change_the_numbers(setup, tmp_path):
    from blinkgen.eval.evaluate import evaluate

    model, ev, _ = setup
    pf = tmp_path / "p.txt"
    pf.write_text("a red circle\n\ngrinning face\n")
    r = evaluate(model, DATA, samples=4, steps=2, evaluator=ev, prompts=pf)
    assert "shapes" in r["metrics"] and r["metrics"]["shapes"]["n_overall"] == 2  # only the shapes prompts
    r2 = evaluate(model, DATA, samples=4, steps=2, evaluator=ev, prompts=pf, seed=1)
    assert r2["metrics"]["fd"] != r["metrics"]["fd"]


def test_cli_eval(setup, tmp_path, capsys):
    from blinkgen.cli import main

    model, ev, _ = setup
    rc = main(["eval", "--model", str(model), "--data", DATA, "--samples", "4", "--steps", "2",
               "--evaluator", str(ev), "--out", str(tmp_path / "cli")])
    assert rc == 0 and (tmp_path / "cli" / "report.md").is_file()
    assert "fd" in json.loads(capsys.readouterr().out.splitlines()[0])
    assert main(["eval", "--model", str(model), "--data", DATA, "--samples", "4", "--sampler", "nope",
                 "--evaluator", str(ev), "--out", str(tmp_path / "bad")]) == 2


def test_bench_script_runs_one_rung_and_a_peer(setup, tmp_path):
    from blinkgen.cli import main

    model, ev, _ = setup
    out = tmp_path / "bench.json"
    assert main(["bench", "--model", str(model), "--data", DATA, "--evaluator", str(ev), "--out", str(out),
                 "--settings", "euler:2", "--peer-steps", "2", "--naive-steps", "2", "--samples", "4", "--batch", "4",
                 "--repeats", "1", "--threads", "1", "--matmul-n", "256"]) == 0
    r = json.loads(out.read_text())
    names = [(x["rung"], x["steps"]) for x in r["rungs"]]
    assert names == [("euler", 2), ("naive", 2), ("diffusers_euler", 2), ("diffusers_dpmpp2m", 2)]
    assert [x["peer"] for x in r["ratios"]] == ["naive@2", "diffusers_euler@2"]  # no dpmpp2m@2 rung of ours
    assert r["matmul_peak_gflops"] > 0 and r["rungs"][0]["batch4"]["mfu"] > 0


def test_reference_seen_by_generator_is_counted_and_warned(setup, tmp_path):
    """A model whose recorded training spec differs from the evaluation spec trained on the
    reference's held-out images: evaluate counts them and the report says the scores are flattered."""
    import shutil

    from blinkgen.eval.evaluate import evaluate
    from blinkgen.eval.report import report_markdown
    from blinkgen.modelio import read_config

    model, ev, _ = setup
    rows = {}
    for name, spec in (("same", DATA), ("bigger", "shapes:400")):
        m = tmp_path / name
        shutil.copytree(model, m)
        cfg = read_config(m)
        cfg["training"] = {**(cfg.get("training") or {}), "data": spec, "seed": 0}
        (m / "config.json").write_text(json.dumps(cfg))
        rows[name] = evaluate(m, DATA, samples=2, steps=1, evaluator=ev)
    same, bigger = (rows[k]["reference_seen_by_generator"] for k in ("same", "bigger"))
    assert same["seen"] == 0 and same["n_reference"] == 4
    assert bigger["seen"] >= 3  # shapes:400's split is another permutation: nearly all 4 in its training
    assert "flattered" not in report_markdown(rows["same"]).split("evaluator's training")[0]
    assert "saw %d of the 4 held-out" % bigger["seen"] in report_markdown(rows["bigger"])


def test_a_held_out_split_too_small_is_refused_before_generating(setup, caplog):
    """Regression: eval on a 20-image folder generated, then failed with 'b needs at least 2
    rows, got 1'. Now the size is checked first, in words a user can act on."""
    import blinkgen
    from blinkgen.errors import UserInputError
    from blinkgen.eval.evaluate import evaluate

    model, ev, _ = setup
    pipe = blinkgen.load(str(model))

    def no_generating(*a, **k):
        raise AssertionError("generated before checking the held-out split")

    pipe.sample = no_generating
    with pytest.raises(UserInputError, match="held-out split .* holds 1; .* at least 75 images"):
        evaluate(pipe, "shapes:20", samples=2, steps=1, evaluator=ev)
    with caplog.at_level("WARNING"):
        evaluate(model, DATA, samples=2, steps=1, evaluator=ev)
    assert "holds only 4 real images" in caplog.text


def test_real_images_through_the_models_decoder(setup):
    """eval scores the same-prompt real images after the model's own encoder and decoder beside the
    raw ones: the bar a latent model can meet by drawing the real images exactly (issue 17's R@1)."""
    from blinkgen import load
    from blinkgen.eval.evaluate import build_reference, evaluate
    from blinkgen.models.autoencoder import to_pixels, to_uint8

    model, ev, root = setup
    r = evaluate(model, DATA, samples=6, steps=2, evaluator=ev, out_dir=root / "dec")
    dec, real = r["metrics"]["real_same_prompts_through_decoder"], r["metrics"]["real_same_prompts"]
    assert dec["n"] == real["n"] > 0 and 0 <= dec["retrieval_R@1"] <= 1
    assert "through the model's decoder" in (root / "dec" / "report.md").read_text()
    pipe = load(str(model))
    ref = build_reference(DATA, pipe.image_size, evaluator=C.load_evaluator(ev))
    back = pipe.round_trip(ref.held_images)
    with torch.no_grad():
        manual = to_uint8(pipe.ae.decode(pipe.ae.encode(to_pixels(ref.held_images))))
    assert back.dtype == torch.uint8 and torch.equal(back, manual)  # the autoencoder's round trip ...
    assert not torch.equal(back, ref.held_images)  # ... not the raw images again


@pytest.mark.parametrize("family,has_decoder", [("ar", True), ("gan", False)])
def test_round_trip_by_family(tmp_path, family, has_decoder):
    from blinkgen import load

    pipe = load(str(make_tiny(family, tmp_path / family)))
    x = torch.randint(0, 256, (3, 3, pipe.image_size, pipe.image_size), dtype=torch.uint8)
    back = pipe.round_trip(x)
    if has_decoder:  # an AR model draws through its tokenizer
        assert back.shape == x.shape and back.dtype == torch.uint8
    else:  # a GAN has no encoder: nothing to pass real images through
        assert back is None
