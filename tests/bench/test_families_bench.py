"""bench/bench_families.py end to end on tiny random models and an untrained tiny evaluator: both
families see the same prompts and seeds, every row carries speed and the shared quality metrics,
the SJD comparison is filled in, and the JSON renders as Markdown."""
from __future__ import annotations

import json

import torch
from benchload import load_bench

from blinkgen.eval import contrastive as C
from blinkgen.models.clip import CLIP_PRESETS, ContrastiveModel
from conftest import make_tiny


def test_families_bench_on_tiny_models(tmp_path, capsys):
    torch.manual_seed(0)
    ev = C.save_evaluator(tmp_path / "evaluator", ContrastiveModel(CLIP_PRESETS["tiny"]).eval(), {})
    diff, ar = make_tiny("diffusion", tmp_path / "diff"), make_tiny("ar", tmp_path / "ar")
    masked = make_tiny("ar", tmp_path / "mg", objective="masked")
    out = tmp_path / "families.json"
    shapes = tmp_path / "shapes.txt"
    shapes.write_text("a red circle on a white background\ntwo blue squares on a black background\n")
    r = load_bench("bench_families").main(["--diffusion", str(diff), "--ar", str(ar), "--data", "shapes:200", "--samples", "4",
                       "--repeats", "2", "--threads", "1", "--windows", "4", "16", "--evaluator", str(ev),
                       "--masked", str(masked), "--masked-steps", "2", "8", "--shapes-prompts", str(shapes),
                       "--out", str(out)])
    rungs = [(x["family"], x["rung"]) for x in r["rows"]]
    assert rungs == [("diffusion", "default"), ("ar", "cached"), ("ar", "sjd window 4"), ("ar", "sjd window 16"),
                     ("ar", "cached, other seeds"), ("ar", "maskgit 2"), ("ar", "maskgit 8")]
    par = r["parallel_vs_plain"]
    assert [c["rung"] for c in par] == ["maskgit 2", "maskgit 8"]
    assert all(c["speedup_batch1"] > 0 and c["speedup_batch4"] > 0 for c in par)
    assert {x["rung"]: x for x in r["rows"]}["maskgit 8"]["network_calls_per_image"] == 8
    for x in r["rows"]:
        assert x["batch4"]["n"] == 4 and x["batch4"]["images_per_s"] > 0
        assert {"fd", "alignment", "retrieval_R@1", "shapes"} <= set(x["quality"])
        if x["rung"] != "cached, other seeds":
            assert x["batch1"]["n"] == 2 and x["batch1"]["p95_s"] >= x["batch1"]["p50_s"]
    sjd = {x["rung"]: x for x in r["rows"]}["sjd window 16"]
    assert sjd["sjd_tokens_per_pass"] >= 1.0 and sjd["settings"]["sampler"] == "sjd"
    comp = r["sjd_vs_plain"]
    assert [c["rung"] for c in comp] == ["sjd window 4", "sjd window 16"]
    assert all(isinstance(c["within_5pct"], bool) and "fd_rel_diff_plain_vs_other_seeds" in c for c in comp)
    assert json.loads(out.read_text())["rows"][0]["family"] == "diffusion"
    table = capsys.readouterr().out
    assert "| ar | sjd window 16 |" in table and "within 5%" in table
    assert "| maskgit 8 |" in table and "Shapes compositional accuracy" in table
    with_shapes = [x["rung"] for x in r["rows"] if "shapes_eval" in x]
    assert with_shapes == ["default", "cached", "maskgit 2", "maskgit 8"]
    assert all(0 <= x["shapes_eval"]["colour"] <= 1 and x["shapes_eval"]["n_colour"] == 2
               for x in r["rows"] if "shapes_eval" in x)


def test_cli_front_door_for_ar_models(tmp_path, capsys):
    """`blinkgen eval` and `blinkgen bench families|tokenizer` take AR and masked-mode models; the
    diffusion ladder refuses an AR model with a pointer to the right bench."""
    from blinkgen.cli import main

    torch.manual_seed(0)
    ev = C.save_evaluator(tmp_path / "evaluator", ContrastiveModel(CLIP_PRESETS["tiny"]).eval(), {})
    ar, mg = make_tiny("ar", tmp_path / "ar"), make_tiny("ar", tmp_path / "mg", objective="masked")
    for model, extra in ((ar, []), (mg, ["--steps", "3"])):
        assert main(["eval", "--model", str(model), "--data", "shapes:200", "--samples", "4", "--evaluator", str(ev),
                     "--out", str(tmp_path / f"eval-{model.name}"), *extra]) == 0
        assert json.loads(capsys.readouterr().out.splitlines()[0])["fd"] >= 0
    assert main(["bench", "families", "--diffusion", "", "--masked", str(mg), "--masked-steps", "2",
                 "--data", "shapes:200", "--samples", "2", "--repeats", "1", "--threads", "1", "--shapes-prompts", "",
                 "--evaluator", str(ev), "--out", str(tmp_path / "fam.json")]) == 0
    assert json.loads((tmp_path / "fam.json").read_text())["rows"][0]["rung"] == "maskgit 2"
    assert main(["bench", "tokenizer", "--tokenizer", str(ar), "--data", "shapes:200", "--evaluator", str(ev),
                 "--threads", "1", "--out", str(tmp_path / "tok.json")]) == 0
    capsys.readouterr()
    assert main(["bench", "--model", str(ar), "--out", str(tmp_path / "x.json")]) == 2
    assert "blinkgen bench ar" in capsys.readouterr().err


def test_sjd_latency_bench_on_tiny_models(tmp_path):
    """bench/bench_sjd.py: every rung timed on every prompt, speed-ups relative to plain decoding."""
    mod = load_bench("bench_sjd")
    torch.manual_seed(0)
    ev = C.save_evaluator(tmp_path / "evaluator", ContrastiveModel(CLIP_PRESETS["tiny"]).eval(), {})
    ar, mg = make_tiny("ar", tmp_path / "ar"), make_tiny("ar", tmp_path / "mg", objective="masked")
    r = mod.main(["--ar", str(ar), "--masked", str(mg), "--windows", "2", "8", "--masked-steps", "3",
                  "--data", "shapes:200", "--prompts", "3", "--rounds", "2", "--threads", "1",
                  "--evaluator", str(ev), "--out", str(tmp_path / "sjd.json")])
    rows = {x["rung"]: x for x in r["rows"]}
    assert list(rows) == ["cached", "sjd window 2", "sjd window 8", "maskgit 3"]
    assert all(x["n"] == 6 and x["speedup_median_wall"] > 0 for x in rows.values())
    assert rows["cached"]["speedup_median_cpu"] == 1.0
    assert 1.0 <= rows["sjd window 8"]["tokens_per_pass"] <= 9 and "tokens_per_pass" not in rows["maskgit 3"]
    assert set(r["network_pass_median_s"]) == {"1", "3", "9"} and rows["sjd window 8"]["pass_cost_vs_step"] > 0
    assert rows["sjd window 8"]["tokens_per_pass_needed_for_1.8x"] == 1.8 * rows["sjd window 8"]["pass_cost_vs_step"]


def _emoji_like_folder(path):
    """Six tiny 'emoji': two groups of three variants, captions as the emoji folder writes them."""
    import numpy as np
    from PIL import Image

    path.mkdir()
    rows = []
    for g, (name, colour) in enumerate([("red heart", (220, 30, 30)), ("thumbs up", (240, 200, 40))]):
        for v, tone in enumerate(["", ": light skin tone", ": dark skin tone"]):
            f = f"{g}-{v}.png"
            Image.fromarray(np.full((32, 32, 3), np.array(colour) - 40 * v, dtype=np.uint8)).save(path / f)
            rows.append({"file_name": f, "text": name + tone, "group": f"emoji:{g}", "style": "twemoji"})
    (path / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_families_bench_gan_and_vae_rows_with_checks(tmp_path, capsys):
    """GAN and VAE rows on the same prompts and seeds as diffusion, their speed-up over the
    diffusion default, and the recognisability and mode-collapse checks on every default row."""
    torch.manual_seed(0)
    ev = C.save_evaluator(tmp_path / "evaluator", ContrastiveModel(CLIP_PRESETS["tiny"]).eval(), {})
    diff, gan, vae = (make_tiny(f, tmp_path / f) for f in ("diffusion", "gan", "vae"))
    emoji = _emoji_like_folder(tmp_path / "emoji")
    names = tmp_path / "names.txt"
    names.write_text("red heart\nthumbs up\nno such emoji\n")
    r = load_bench("bench_families").main(["--diffusion", str(diff), "--gan", str(gan), "--vae", str(vae),
                                           "--gan-truncations", "0.5", "--vae-temperatures", "0.3",
                                           "--data", "shapes:200", "--samples", "4", "--repeats", "2",
                                           "--threads", "1", "--evaluator", str(ev), "--shapes-prompts", "",
                                           "--nn-data", str(emoji), "--nn-prompts", str(names),
                                           "--out", str(tmp_path / "fam.json")])
    rungs = [(x["family"], x["rung"]) for x in r["rows"]]
    assert rungs == [("diffusion", "default"), ("gan", "default"), ("gan", "truncation 0.5"), ("vae", "default"),
                     ("vae", "temperature 0.3")]
    defaults = [x for x in r["rows"] if x["rung"] == "default"]
    for x in defaults:
        assert x["nn"]["n"] == 2 and 0 <= x["nn"]["hits"] <= 2  # the unknown name is not counted
        div = x["diversity"]
        assert [p["prompt"] for p in div["per_prompt"]] == ["thumbs up", "red heart"]
        assert all(p["n_real"] == 3 and p["generated"] >= 0 and p["real_variants"] > 0 for p in div["per_prompt"])
    assert {x["family"] for x in r["rows"] if "nn" in x} == {"diffusion", "gan", "vae"}
    assert [(c["family"], c["rung"]) for c in r["onepass_vs_diffusion"]] == rungs[1:]
    assert all(c["speedup_batch1"] > 0 for c in r["onepass_vs_diffusion"])
    assert {x["rung"]: x for x in r["rows"]}["truncation 0.5"]["settings"]["truncation"] == 0.5
    table = capsys.readouterr().out
    assert "| gan | default |" in table and "Mode collapse" in table and "Nearest-neighbour" in table
