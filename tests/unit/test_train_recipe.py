"""The small-data recipe's pieces: group-balanced batch order, the caption table with style
phrases, and identity-keeping mirror augmentation of shapes scenes."""
import json

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from blinkgen.data.augment import mirror_shapes
from blinkgen.data.shapes import make_shapes, parse_caption
from blinkgen.data.types import ImageCaptionSet
from blinkgen.eval.shapes_check import check
from blinkgen.train.captions import CaptionTable, styled
from blinkgen.train.config import TrainConfig, resolve_mixed_precision
from blinkgen.train.order import BatchOrder, GroupOrder, make_order

group_lists = st.lists(st.sampled_from("abcdefg"), min_size=1, max_size=40)


@settings(max_examples=60, deadline=None)
@given(group_lists, st.integers(0, 5), st.integers(1, 17))
def test_group_order_visits_every_group_once_per_epoch(groups, seed, B):
    order = GroupOrder(groups, seed)
    G = len(set(groups))
    stream = torch.cat([order.indices(s, B) for s in range(3 * G // B + 2)])
    for e in range(2):
        epoch = stream[e * G:(e + 1) * G].tolist()
        assert sorted(groups[i] for i in epoch) == sorted(set(groups))  # each group exactly once
    # a pure function of (seed, step): a fresh order (a resumed run) agrees at any step
    again = GroupOrder(groups, seed)
    assert torch.equal(again.indices(5, B), order.indices(5, B))


def test_group_order_draws_members_uniformly():
    groups = ["big"] * 10 + ["small"]
    order = GroupOrder(groups, 0)
    picks = torch.cat([order.indices(s, 2) for s in range(2000)]).tolist()
    big = [i for i in picks if groups[i] == "big"]
    assert abs(len(big) / len(picks) - 0.5) < 0.01  # the subject, not the image, is drawn uniformly
    counts = torch.bincount(torch.tensor(big), minlength=10)
    assert counts.min() > 0.7 * counts.float().mean()  # then a member uniformly


@given(st.integers(1, 50), st.integers(0, 3), st.integers(1, 70))
def test_image_order_is_a_permutation_per_epoch(n, seed, B):
    order = make_order("image", [""] * n, seed)
    stream = torch.cat([order.indices(s, B) for s in range(n // B + 2)])[:n]
    assert sorted(stream.tolist()) == list(range(n))
    assert isinstance(order, BatchOrder) and not isinstance(order, GroupOrder)


def test_caption_table_styles():
    caps = [["red heart", "heart"], ["red heart in twemoji style"], ["a red circle"]]
    table = CaptionTable(caps, ["noto emoji", "twemoji", ""], extra=[""])
    assert table.styles == ["noto emoji", "twemoji"]
    s = table.strings
    idx = torch.tensor([0, 0, 1, 2, 2])
    u = torch.tensor([0.1, 0.9, 0.5, 0.1, 0.1])
    no = torch.ones(5)
    plain = [s[i] for i in table.draw(idx, u, no, torch.zeros(5), style_prob=0.5).tolist()]
    assert plain == ["red heart", "heart", "red heart in twemoji style", "a red circle", "a red circle"]
    yes = torch.zeros(5)
    pick = torch.tensor([0.0, 0.0, 0.0, 0.2, 0.8])
    got = [s[i] for i in table.draw(idx, u, yes, pick, style_prob=0.5).tolist()]
    assert got == ["red heart in noto emoji style", "heart in noto emoji style",
                   "red heart in twemoji style",  # already names its style: not doubled
                   "a red circle in noto emoji style", "a red circle in twemoji style"]  # unstyled: from the pool
    assert "" in s and styled("x", "") == "x"


def test_caption_table_without_styles_is_plain():
    table = CaptionTable([["a"], ["b", "c"]], None)
    assert table.with_style.shape == (2, 2, 0)
    ids = table.draw(torch.tensor([1]), torch.tensor([0.7]), torch.zeros(1), torch.zeros(1), 1.0)
    assert table.strings[ids.item()] == "c"


def test_mirror_keeps_captions_true_of_the_pixels():
    ds = make_shapes(60, seed=3, size=64)
    aug = mirror_shapes(ds)
    assert aug.images[:60].equal(ds.images) and aug.captions[:60] == ds.captions
    n_rel = 0
    for i in range(60, len(aug)):
        base = aug.names[i].split("#")[0]
        j = ds.names.index(base)
        assert aug.group_ids()[i] == ds.group_ids()[j]  # a mirror joins its original's group
        for cap in aug.captions[i]:
            scene = parse_caption(cap)  # still the grammar
            n_rel += scene.relation is not None
            assert check(aug.images[i].permute(1, 2, 0).numpy(), cap).overall, (cap, ds.captions[j])
        if aug.names[i].endswith("mirror-v"):
            assert not any("triangle" in c for c in aug.captions[i])  # triangles point up: no v-flip
    assert n_rel > 5  # relations were really swapped and re-checked


def test_mirror_leaves_other_captions_alone():
    ds = ImageCaptionSet(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), [["red heart"], ["a cat left of a dog"]], ["a", "b"])
    assert mirror_shapes(ds) is ds


def test_config_recipe_fields_validate():
    from blinkgen.errors import UserInputError
    import pytest
    for bad in ({"order": "groups"}, {"style_prob": 1.5}, {"augment": "flip"}, {"mixed_precision": "int8"},
                {"t_shift": 0.0}, {"t_shift": 50.0}):
        with pytest.raises(UserInputError):
            TrainConfig(**bad).validate()
    assert resolve_mixed_precision("no") == "no"
    assert resolve_mixed_precision("auto") in ("no", "bf16")


def test_mix_order_weights_parts_then_groups():
    groups = ["e1"] * 6 + ["e2"] + [f"s{i}" for i in range(50)]
    parts = [0] * 7 + [1] * 50
    order = make_order("group", groups, 3, parts, "0.75,0.25")
    picks = torch.cat([order.indices(s, 64) for s in range(200)]).tolist()
    share0 = sum(parts[i] == 0 for i in picks) / len(picks)
    assert abs(share0 - 0.75) < 0.02  # the part by its weight, whatever its size
    e = [groups[i] for i in picks if parts[i] == 0]
    assert abs(e.count("e1") / len(e) - 0.5) < 0.03  # then its groups uniformly
    again = make_order("group", groups, 3, parts, "0.75,0.25")
    assert torch.equal(again.indices(17, 64), order.indices(17, 64))  # pure in (seed, step)
    import pytest
    with pytest.raises(ValueError):
        make_order("group", groups, 0, parts, "1")  # one weight per part
    with pytest.raises(ValueError):
        make_order("image", groups, 0, parts, "1,1")


def test_cpu_limit_stops_exports_and_resume_continues(tmp_path, tiny_model_dir):
    import json
    from conftest import run_cli
    out = tmp_path / "run"
    args = ["train", "--family", "diffusion", "--data", "shapes:24", "--size", "32", "--preset", "tiny",
            "--autoencoder", tiny_model_dir / "autoencoder", "--out", out, "--steps", 100000, "--batch-size", 4,
            "--eval-every", 0, "--sample-every", 0, "--ckpt-every", 0, "--order", "group", "--augment", "mirror"]
    first = run_cli(*args, "--cpu-limit", 1.0, "--resume")  # nothing to resume yet: a fresh run, said so
    assert "holds no checkpoint, so this is a fresh run" in first.stderr
    st = json.loads((out / "train_stats.json").read_text())
    assert 1.0 <= st["cpu_seconds_total"] < 30 and 0 < st["final_step"] < 100000
    assert (out / "model" / "model.safetensors").is_file()
    second = run_cli(*args, "--cpu-limit", 2.0, "--resume")
    assert "holds no checkpoint" not in second.stderr
    st2 = json.loads((out / "train_stats.json").read_text())
    assert st2["final_step"] > st["final_step"] and st2["cpu_seconds_total"] >= 2.0
    # the exported config carries the whole run's cost, not only the last session's wall time
    tr = json.loads((out / "model" / "config.json").read_text())["training"]
    assert tr["cpu_seconds"] == round(st2["cpu_seconds_total"], 1)
    assert tr["resumed_from_step"] == st["final_step"] == st2["resumed_from_step"]
    assert tr["seconds_total"] >= tr["seconds"] + st["seconds"] - 0.2


def test_extra_emas_export_and_resume_exactly(tmp_path, tiny_model_dir):
    from safetensors.torch import load_file
    from conftest import run_cli

    def args(out, steps):
        return ["train", "--family", "diffusion", "--data", "shapes:24", "--size", "32", "--preset", "tiny",
                "--autoencoder", tiny_model_dir / "autoencoder", "--out", out, "--steps", steps, "--batch-size", 4,
                "--eval-every", 0, "--sample-every", 0, "--ckpt-every", 3, "--warmup", 0, "--min-lr-ratio", 1.0,
                "--ema-decay", 0.1, "--ema-extra", "0.9,0.99"]  # 0.1 < the warm-up decay
    straight, cut = tmp_path / "a", tmp_path / "b"
    run_cli(*args(straight, 6))
    run_cli(*args(cut, 3))
    run_cli(*args(cut, 6), "--resume")  # constant LR: stopping at 3 and resuming is the same run
    for name in ("model", "model-ema0.9", "model-ema0.99"):
        a = load_file(str(straight / name / "model.safetensors"))
        b = load_file(str(cut / name / "model.safetensors"))
        assert all(torch.equal(a[k], b[k]) for k in a), name
    main = load_file(str(straight / "model" / "model.safetensors"))
    long = load_file(str(straight / "model-ema0.99" / "model.safetensors"))
    assert any(not torch.equal(main[k], long[k]) for k in main)  # a different average
    # each folder records the decay its warm-up reached: 0.9 and 0.99 both end at (1 + 5) / (10 + 5)
    # after 6 steps, so they hold the same weights (what a short run's warning says)
    reached = {name: json.loads((straight / name / "config.json").read_text())["training"]["ema_decay_reached"]
               for name in ("model", "model-ema0.9", "model-ema0.99")}
    assert reached == {"model": 0.1, "model-ema0.9": 0.4, "model-ema0.99": 0.4}
    short = load_file(str(straight / "model-ema0.9" / "model.safetensors"))
    assert all(torch.equal(short[k], long[k]) for k in short)


def test_t_shift_trains_at_high_noise_and_the_model_samples_with_it(tmp_path, tiny_model_dir):
    """--t-shift 3: the task draws its training times shifted toward noise, and the exported model
    records schedule_shift 3, so generation spends its steps on the same times."""
    import json
    from blinkgen.data.registry import load_dataset
    from blinkgen.families.diffusion.tasks import DiffusionTask
    from blinkgen.train.loop import split
    from conftest import run_cli

    cfg = TrainConfig(family="diffusion", data="shapes:24", size=32, preset="tiny", t_shift=3.0,
                      autoencoder=str(tiny_model_dir / "autoencoder")).validate()
    tr, va = split(load_dataset("shapes:24", 32), cfg)
    task = DiffusionTask(cfg, tr, va, torch.device("cpu"))
    t3 = task.draw(torch.Generator().manual_seed(0), 4096)["t"]
    t1 = DiffusionTask(TrainConfig(**{**cfg.to_dict(), "t_shift": 1.0}), tr, va, torch.device("cpu")).draw(
        torch.Generator().manual_seed(0), 4096)["t"]
    assert torch.allclose(t3, 3 * t1 / (1 + 2 * t1)) and (t3 > 0.8).float().mean() > 2 * (t1 > 0.8).float().mean()
    out = tmp_path / "run"
    run_cli("train", "--family", "diffusion", "--data", "shapes:24", "--size", "32", "--preset", "tiny",
            "--autoencoder", tiny_model_dir / "autoencoder", "--out", out, "--steps", 2, "--batch-size", 4,
            "--eval-every", 0, "--sample-every", 0, "--ckpt-every", 0, "--t-shift", 3)
    assert json.loads((out / "model" / "config.json").read_text())["schedule_shift"] == 3.0


def test_restored_best_records_the_decay_of_its_own_step(tmp_path, tiny_model_dir):
    """restore_best (the fine-tune command's early stopping) exports the EMA of the best validation,
    so ema_decay_reached must be the warm-up's decay at that checkpoint's step, not the last one's."""
    from blinkgen.train.ema import warm_decay
    from blinkgen.train.loop import train

    out = tmp_path / "run"
    train(TrainConfig(family="diffusion", data="shapes:24", size=32, preset="tiny", out=str(out), steps=8,
                      autoencoder=str(tiny_model_dir / "autoencoder"), batch_size=4, eval_every=1, sample_every=0,
                      ckpt_every=4, warmup=0, min_lr_ratio=1.0, lr=0.5, ema_decay=0.99,  # lr 0.5: the best is early
                      restore_best=True).validate())
    training = json.loads((out / "model" / "config.json").read_text())["training"]
    best = training["exported"]["step"]
    assert best < 8
    assert training["ema_decay_reached"] == warm_decay(0.99, best - 1)


def test_a_handful_of_pictures_names_the_held_out_ones():
    """Fresh-user trial: with 9 icons, 2 never train and the run did not say which."""
    import torch

    from blinkgen.data.types import ImageCaptionSet
    from blinkgen.train.config import TrainConfig
    from blinkgen.train.loop import held_out_note, split

    data = ImageCaptionSet(torch.zeros(9, 3, 8, 8, dtype=torch.uint8), [[f"c{i}"] for i in range(9)],
                           [f"icon{i}.png" for i in range(9)])
    _, val = split(data, TrainConfig(family="diffusion", data="x", out="y", val_fraction=0.2))
    note = held_out_note(len(data), val)
    assert note.startswith(f"held out for validation, never trained on: {len(val)} of 9 images (")
    assert all(n in note for n in val.names) and len(val) == 2
    assert held_out_note(1000, val) is None  # a big dataset: the count in the plan is enough
