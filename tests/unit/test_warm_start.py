"""`blinkgen train --init-from MODEL`: a fresh run that starts at a trained folder's weights (so a
run continues on a new machine from the weights in git alone), and the clear errors when the folder
is another network, a distilled student or another latent space."""
import json

import pytest
import torch
from safetensors.torch import load_file

from blinkgen.errors import UserInputError
from blinkgen.modelio import weights_hash
from blinkgen.train.config import TrainConfig
from blinkgen.train.loop import train
from blinkgen.train.plan import format_plan, stage_plan


def _cfg(out, **kw):
    d = dict(family="diffusion", data="shapes:16", size=32, preset="tiny", out=str(out), steps=1, batch_size=4,
             eval_every=0, sample_every=0, ckpt_every=0, warmup=0, min_lr_ratio=1.0, lr=1e-9, ema_decay=0.0)
    d.update(kw)
    return TrainConfig(**d).validate()


def _max_diff(a, b):
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def test_init_from_starts_at_the_folder_and_records_it(tmp_path, tiny_model_dir):
    from conftest import run_cli

    start = load_file(str(tiny_model_dir / "model.safetensors"))
    out = tmp_path / "warm"
    # no --autoencoder: the folder's own is the run's latent space (no stage-1 training)
    args = ["train", "--family", "diffusion", "--data", "shapes:16", "--size", 32, "--preset", "tiny",
            "--out", out, "--batch-size", 4, "--eval-every", 0, "--sample-every", 0, "--ckpt-every", 1,
            "--warmup", 0, "--min-lr-ratio", 1.0, "--lr", 1e-9, "--ema-decay", 0.0, "--init-from", tiny_model_dir]
    r = run_cli(*args, "--steps", 1)
    assert "reuse the trained" in r.stderr and "warm start from" in r.stderr
    assert not (out / "ae").exists()
    got = load_file(str(out / "model" / "model.safetensors"))
    assert _max_diff(got, start) < 1e-6  # one step at lr 1e-9: still the folder's weights
    cold = train(_cfg(tmp_path / "cold", autoencoder=str(tiny_model_dir / "autoencoder")))
    assert _max_diff(load_file(str(cold / "model.safetensors")), start) > 1e-3  # a random init is not
    rec = json.loads((out / "model" / "config.json").read_text())["training"]["init_from"]
    assert rec["weights_sha256"] == weights_hash(tiny_model_dir)
    assert weights_hash(out / "model" / "autoencoder") == weights_hash(tiny_model_dir / "autoencoder")
    # a resume continues the checkpoint (step 1 -> 2) and keeps the first leg's record
    run_cli(*args, "--steps", 2, "--resume")
    stats = json.loads((out / "train_stats.json").read_text())
    assert stats["resumed_from_step"] == 1 and stats["final_step"] == 2
    again = json.loads((out / "model" / "config.json").read_text())["training"]
    assert again["init_from"] == rec and again["resumed_from_step"] == 1


def test_init_from_refuses_another_network(tmp_path, tiny_model_dir):
    with pytest.raises(UserInputError, match="another network.*latent_size"):
        train(_cfg(tmp_path / "r", size=64, init_from=str(tiny_model_dir)))


def _copy_with_config(src, dst, edit):
    import shutil

    shutil.copytree(src, dst)
    config = json.loads((dst / "config.json").read_text())
    edit(config["dit"])
    (dst / "config.json").write_text(json.dumps(config))
    return dst


def test_init_from_takes_a_folder_written_before_a_config_field_existed(tmp_path, tiny_model_dir):
    # regression: the shipped teacher (git f7da357) predates U-ViT's text_mode; its config has no
    # such key, and --init-from refused it ("text_mode: None there, 'cross' here")
    from blinkgen.models.denoisers import PRESETS, build, config_dict

    arch, over = PRESETS["uvit-tiny"]
    net = build(arch, dict(latent_channels=4, latent_size=8, **over))
    defaults = config_dict(net)
    assert "text_mode" in defaults and defaults["text_mode"] == "cross"
    old = _copy_with_config(tiny_model_dir, tmp_path / "old", lambda d: d.pop("step_size_cond", None))
    train(_cfg(tmp_path / "r", init_from=str(old)))  # tiny (DiT): a defaulted key absent is the same network
    other = _copy_with_config(tiny_model_dir, tmp_path / "other", lambda d: d.update(step_size_cond=True))
    with pytest.raises(UserInputError, match="distilled|step_size_cond"):
        train(_cfg(tmp_path / "r2", init_from=str(other)))


def test_full_config_fills_defaults_and_keeps_what_it_cannot_read():
    from blinkgen.models.denoisers import full_config

    got = full_config("uvit", dict(latent_channels=4, latent_size=8, hidden=64, depth=2, heads=2))
    assert got["text_mode"] == "cross" and got["hidden"] == 64
    assert full_config("uvit", {"no_such_field": 1}) == {"no_such_field": 1}
    assert full_config("nope", {"a": 1}) == {"a": 1}


def test_init_from_refuses_a_distilled_student(tmp_path):
    from conftest import make_tiny
    student = make_tiny("diffusion", tmp_path / "student", shortcut=True)
    with pytest.raises(UserInputError, match="step_size_cond"):
        train(_cfg(tmp_path / "r", init_from=str(student)))
    cfg = json.loads((student / "config.json").read_text())
    (student / "config.json").write_text(json.dumps({**cfg, "distilled": {"teacher": "/some/teacher"}}))
    with pytest.raises(UserInputError, match="distilled student.*/some/teacher"):
        train(_cfg(tmp_path / "r2", init_from=str(student)))
    # found before any data are read: a dataset that cannot load is never reached
    with pytest.raises(UserInputError, match="distilled student"):
        train(_cfg(tmp_path / "r3", init_from=str(student), data=str(tmp_path / "no-such-folder")))
    with pytest.raises(UserInputError, match="holds a 'vae' model, not a diffusion model"):
        cfg = json.loads((student / "config.json").read_text())
        (student / "config.json").write_text(json.dumps({**cfg, "family": "vae"}))
        train(_cfg(tmp_path / "r4", init_from=str(student), data=str(tmp_path / "no-such-folder")))


def test_init_from_refuses_another_latent_space(tmp_path, tiny_model_dir):
    from conftest import make_tiny
    other = make_tiny("diffusion", tmp_path / "other", seed=1)
    with pytest.raises(UserInputError, match="another autoencoder's latent space"):
        train(_cfg(tmp_path / "r", init_from=str(tiny_model_dir), autoencoder=str(other / "autoencoder")))


def test_init_from_is_checked_before_anything_trains(tmp_path, tiny_model_dir):
    with pytest.raises(UserInputError, match="fine-tuning and distillation"):
        TrainConfig(family="diffusion", task="lora", init_from=str(tiny_model_dir)).validate()
    with pytest.raises(Exception, match="no model named"):
        stage_plan(_cfg(tmp_path / "r", init_from="no-such-model"))
    plan = format_plan(stage_plan(_cfg(tmp_path / "r", init_from=str(tiny_model_dir))))
    assert f"reuse the trained {tiny_model_dir / 'autoencoder'}" in plan and "warm start from" in plan
    from conftest import make_tiny
    vae_cfg = dict(family="vae", data="shapes:16", size=32, preset="tiny", steps=1, batch_size=4, eval_every=0,
                   sample_every=0, ckpt_every=0)
    with pytest.raises(UserInputError, match="holds a 'diffusion' model, not a vae model"):
        train(TrainConfig(**vae_cfg, out=str(tmp_path / "v"), init_from=str(tiny_model_dir)).validate())
    vae = make_tiny("vae", tmp_path / "vae")
    with pytest.raises(UserInputError, match="not supported"):  # families without it say so
        train(TrainConfig(**vae_cfg, out=str(tmp_path / "v2"), init_from=str(vae)).validate())


def test_validation_images_the_source_trained_on_are_counted(tmp_path):
    """A warm start on a bigger spec than its source's: the new run's validation split holds images
    the source trained on (eval/leakage.py), and the exported config says how many."""
    import json

    from blinkgen.eval.leakage import val_seen_by_ancestors
    from blinkgen.modelio import read_config

    src = tmp_path / "src"
    src.mkdir()
    (src / "config.json").write_text(json.dumps({"family": "diffusion", "training": {"data": "shapes:300", "seed": 0}}))
    from blinkgen.data.registry import load_dataset
    from blinkgen.train.config import TrainConfig
    from blinkgen.train.loop import split

    for spec, expect_some in (("shapes:300", False), ("shapes:600", True)):
        cfg = TrainConfig(family="diffusion", data=spec, size=32, init_from=str(src))
        val = split(load_dataset(spec, 32), cfg)[1]
        r = val_seen_by_ancestors(cfg, val.images)
        assert (r["seen"] > 0) is expect_some and r["n_reference"] == len(val), (spec, r)
    assert val_seen_by_ancestors(TrainConfig(data="shapes:300"), val.images) is None  # no ancestor
    assert read_config(src)["training"]["data"] == "shapes:300"
