"""eval.leakage: which held-out reference images a model's lineage trained on. The regression it
guards: the default shipped at 19bc72e was distilled on emoji+shapes:12000 and scored on the
held-out split of emoji+shapes:3000, 208 of whose 211 images it had trained on."""
from __future__ import annotations

import pytest

from blinkgen.data.registry import load_dataset
from blinkgen.eval.contrastive import held_out_split
from blinkgen.eval.leakage import image_hashes, lineage, seen_by_generator
from blinkgen.train.config import TrainConfig
from blinkgen.train.loop import split

SIZE = 32
REF = "shapes:300"  # 6 held-out images


@pytest.fixture(scope="module")
def ref_hashes():
    return image_hashes(held_out_split(load_dataset(REF, SIZE, 0), 0)[1].images)


def _by_index(spec_ref: str, spec_model: str, seed_model: int = 0) -> int:
    """The same count by hand: reference held-out images that sit in the model's training split."""
    held = set(image_hashes(split(load_dataset(spec_ref, SIZE, 0), TrainConfig(seed=0))[1].images))
    train = split(load_dataset(spec_model, SIZE, seed_model), TrainConfig(seed=seed_model))[0]
    return len(held & set(image_hashes(train.images)))


def test_same_spec_and_seed_saw_nothing(ref_hashes):
    r = seen_by_generator({"training": {"data": REF, "seed": 0}}, REF, 0, ref_hashes, SIZE)
    assert r == {"n_reference": 6, "seen": 0, "runs": [{"role": "model", "data": REF, "seed": 0, "seen": 0}]}


def test_a_bigger_spec_trained_on_the_reference(ref_hashes):
    # shapes:600 starts with the same 300 images, but its split is another permutation
    r = seen_by_generator({"training": {"data": "shapes:600", "seed": 0}}, REF, 0, ref_hashes, SIZE)
    assert r["seen"] == _by_index(REF, "shapes:600") and r["seen"] >= 4


def test_a_distilled_student_counts_its_teacher_too(ref_hashes):
    cfg = {"training": {"data": REF, "seed": 0},
           "distilled": {"teacher_training": {"data": "shapes:600", "seed": 0}}}
    r = seen_by_generator(cfg, REF, 0, ref_hashes, SIZE)
    assert [x["role"] for x in r["runs"]] == ["model", "model <- teacher"]
    assert r["runs"][0]["seen"] == 0 and r["seen"] == r["runs"][1]["seen"] == _by_index(REF, "shapes:600")


def test_another_split_seed_is_another_split(ref_hashes):
    r = seen_by_generator({"training": {"data": REF, "seed": 5}}, REF, 0, ref_hashes, SIZE)
    assert r["seen"] == _by_index(REF, REF, 5)


def test_unrecorded_data_is_unknown_not_zero(ref_hashes):
    r = seen_by_generator({"training": {"seed": 0}}, REF, 0, ref_hashes, SIZE)
    assert r["seen"] is None
    assert seen_by_generator(None, REF, 0, ref_hashes, SIZE)["seen"] is None


def test_lineage_follows_warm_starts_recorded_and_on_disk(tmp_path):
    import json

    src = tmp_path / "src"
    src.mkdir()
    (src / "config.json").write_text(json.dumps({"training": {"data": "shapes:50", "seed": 2}}))
    on_disk = {"training": {"data": "emoji", "init_from": {"path": str(src)}}}
    assert [(x["role"], x["data"], x["seed"]) for x in lineage(on_disk)] == [
        ("model", "emoji", 0), ("model <- init_from", "shapes:50", 2)]
    recorded = {"training": {"data": "emoji", "init_from": {"path": str(tmp_path / "gone"),
                                                            "lineage": lineage(json.loads((src / "config.json").read_text()), "init_from")}}}
    assert [x["data"] for x in lineage(recorded)] == ["emoji", "shapes:50"]
    lost = {"training": {"data": "emoji", "init_from": {"path": str(tmp_path / "gone")}}}
    assert lineage(lost)[1]["data"] is None  # neither recorded nor on disk: unknown


def test_a_spec_missing_on_this_machine_is_unknown_with_the_reason(ref_hashes, tmp_path):
    r = seen_by_generator({"training": {"data": str(tmp_path / "gone"), "seed": 0}}, REF, 0, ref_hashes, SIZE)
    assert r["seen"] is None and "cannot load" in r["runs"][0]["error"]
