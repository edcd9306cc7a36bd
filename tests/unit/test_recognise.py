"""The nearest-neighbour recognisability check: a perfect copy of a prompt's own image is a hit, a
copy of another emoji is not, ranks are 1-based, and eval wires it through."""
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from blinkgen.data.folder import save_folder
from blinkgen.data.types import ImageCaptionSet
from blinkgen.eval.recognise import nearest_neighbour_hits, own_images


def _reference(n=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    imgs = torch.randint(0, 256, (n, 3, 64, 64), generator=g, dtype=torch.uint8)
    caps = [[f"emoji {i}", f"alias {i}"] for i in range(n)]
    return ImageCaptionSet(imgs, caps, [f"{i}.png" for i in range(n)])


@settings(max_examples=20, deadline=None)
@given(st.permutations(list(range(12))))
def test_copies_of_own_images_hit_and_others_do_not(perm):
    ref = _reference()
    prompts = [f"Emoji {i}" for i in range(12)]  # case-insensitive caption match
    own = nearest_neighbour_hits(ref.images, prompts, ref, k=1)
    assert own["hits"] == 12 and all(r["rank"] == 1 for r in own["per_prompt"])
    swapped = nearest_neighbour_hits(ref.images[list(perm)], prompts, ref, k=1)
    assert swapped["hits"] == sum(p == i for i, p in enumerate(perm))


def test_own_images_and_unknown_prompts():
    ref = _reference()
    assert own_images("alias 3", ref) == [3]
    r = nearest_neighbour_hits(ref.images[:2], ["emoji 0", "a cat nobody drew"], ref)
    assert r["hits"] == 1 and r["per_prompt"][1]["rank"] is None


def test_eval_reports_the_check(tmp_path, tiny_model_dir):
    from blinkgen.eval.contrastive import save_evaluator
    from blinkgen.eval.evaluate import evaluate
    from blinkgen.models.clip import CLIP_PRESETS, ContrastiveModel

    torch.manual_seed(0)
    ev = save_evaluator(tmp_path / "ev", ContrastiveModel(CLIP_PRESETS["tiny"]).eval(), {})
    ref = _reference(6)
    save_folder(ref, tmp_path / "ref")
    prompts = tmp_path / "p.txt"
    prompts.write_text("emoji 1\nemoji 2\nnot an emoji\nemoji 1\n")
    r = evaluate(str(tiny_model_dir), "shapes:200", samples=4, steps=1, evaluator=ev, prompts=str(prompts),
                 nn_reference=str(tmp_path / "ref"), out_dir=tmp_path / "out")
    nn = r["metrics"]["nn"]
    assert nn["n"] == 2 and 0 <= nn["hits"] <= 2  # distinct prompts that name a reference image
    assert "nearest-neighbour" in (tmp_path / "out" / "report.md").read_text()
