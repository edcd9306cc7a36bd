"""The task protocol of the one training loop (blinkgen/train/task.py), end to end in-process:
named optimizers with one checkpoint file each, a frozen teacher, every logged term in
TensorBoard, and checkpoints written before optimizers had names still resuming."""
from __future__ import annotations

import shutil

import pytest
import torch
from safetensors.torch import load_file

from blinkgen.data.registry import load_dataset
from blinkgen.train.checkpoint import latest_checkpoint
from blinkgen.train.config import TrainConfig
from blinkgen.train.loop import train
from conftest import write_pre_protocol_checkpoint

pytestmark = pytest.mark.slow


def rewind(run, step: int) -> None:
    """Make the run look killed right after checkpoint `step`: later checkpoints and the export go."""
    ck = run / "checkpoints"
    for p in ck.glob("step-*"):
        if int(p.name.split("-")[1]) > step:
            shutil.rmtree(p)
    (ck / "latest").write_text(f"step-{step:08d}\n")
    shutil.rmtree(run / "model")


def tb_tags(run) -> set[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tb"))
    acc.Reload()
    return set(acc.Tags()["scalars"])


def weights(folder) -> dict:
    return {f.name: load_file(str(f)) for f in sorted(folder.rglob("*.safetensors"))}


def test_pre_protocol_diffusion_checkpoint_resumes_bit_identically(tmp_path, tiny_model_dir):
    """A diffusion run's checkpoint in the old layout (one optimizer.safetensors) resumes to the
    same weights and optimizer state as the uninterrupted run (the lead's long runs rely on it)."""
    data = load_dataset("shapes:48", 32, 0)
    cfg = TrainConfig(family="diffusion", data="shapes:48", size=32, preset="tiny", steps=10, batch_size=8,
                      lr=1e-3, autoencoder=str(tiny_model_dir / "autoencoder"), eval_every=5, ckpt_every=5,
                      sample_every=0, log_every=5, out=str(tmp_path / "run"))
    run = tmp_path / "run"
    ref = weights(train(cfg, data=data))
    ref_opt = load_file(str(run / "checkpoints" / "step-00000010" / "optimizer.model.safetensors"))
    rewind(run, 5)
    write_pre_protocol_checkpoint(latest_checkpoint(run))
    assert (run / "checkpoints" / "step-00000005" / "optimizer.safetensors").is_file()
    again = weights(train(cfg, resume=True, data=data))
    assert ref.keys() == again.keys()
    for f in ref:
        assert all(torch.equal(ref[f][k], again[f][k]) for k in ref[f]), f
    opt = load_file(str(run / "checkpoints" / "step-00000010" / "optimizer.model.safetensors"))
    assert all(torch.equal(ref_opt[k], opt[k]) for k in ref_opt)
    assert {"train/loss", "train/lr", "val/val_loss"} <= tb_tags(run)


def test_two_named_optimizers_and_a_frozen_teacher(tmp_path):
    """The test family's "duel" task: a critic and a student, each with its own optimizer, loss
    method and checkpoint file; a teacher the loop keeps frozen and out of the checkpoint; every
    logged term under train/<optimizer>/; resume equal to an uninterrupted run."""
    data = load_dataset("shapes:40", 32, 0)
    cfg = TrainConfig(family="constant", task="duel", data="shapes:40", size=32, preset="tiny", steps=8,
                      batch_size=8, lr=1e-2, eval_every=4, ckpt_every=4, sample_every=8, log_every=2,
                      out=str(tmp_path / "run"))
    run = tmp_path / "run"
    from blinkgen.families import get

    task_cls = get("constant").task_class("duel")
    seen = {}
    orig_init = task_cls.__init__

    def spy(self, *a, **kw):
        orig_init(self, *a, **kw)
        seen["teacher"] = {k: v.clone() for k, v in self.teacher.state_dict().items()}
        seen["task"] = self

    task_cls.__init__ = spy
    try:
        out = train(cfg, data=data)
    finally:
        task_cls.__init__ = orig_init
    teacher = seen["task"].teacher
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in seen["teacher"].items())
    ck = run / "checkpoints" / "step-00000008"
    assert sorted(p.name for p in ck.glob("optimizer*")) == ["optimizer.colour.safetensors",
                                                             "optimizer.critic.safetensors"]
    assert set(load_file(str(ck / "model.safetensors"))) == {
        "critic.weight", "critic.bias", "colour.net.0.weight", "colour.net.0.bias", "colour.net.2.weight",
        "colour.net.2.bias"}  # no teacher weights
    assert {"train/critic/loss", "train/critic/critic_gap", "train/colour/loss", "train/colour/distil",
            "train/lr", "val/val_loss"} <= tb_tags(run)
    assert (run / "samples" / "step-00000008.png").is_file()
    import json

    optimizers = json.loads((ck / "state.json").read_text())["optimizers"]
    groups = {n: m["param_groups"][0]["lr"] for n, m in optimizers.items()}
    assert groups["critic"] == pytest.approx(0.5 * groups["colour"])  # the critic's lr_scale
    ref = weights(out)
    rewind(run, 4)
    again = weights(train(cfg, resume=True, data=data))
    assert all(torch.equal(ref[f][k], again[f][k]) for f in ref for k in ref[f])


@pytest.mark.parametrize("backend, want_in_steps", [("auto", False), ("default", True)])
def test_training_steps_run_under_the_resolved_sdpa_backend(tmp_path, tiny_model_dir, monkeypatch, backend,
                                                            want_in_steps):
    """On a CPU, "auto" trains with SDPA's math backend (the flash-attention backward is the CPU step's
    biggest cost, bench/RESULTS.md) and records it resolved; validation and sample grids -- inference --
    keep torch's own choice. "default" leaves every call to torch."""
    import json

    import torch.nn.functional as F

    calls = []  # (grad enabled, flash allowed) per attention call
    orig = F.scaled_dot_product_attention

    def spy(*a, **kw):
        calls.append((torch.is_grad_enabled(), torch.backends.cuda.flash_sdp_enabled()))
        return orig(*a, **kw)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    cfg = TrainConfig(family="diffusion", data="shapes:24", size=32, preset="tiny", steps=2, batch_size=4,
                      autoencoder=str(tiny_model_dir / "autoencoder"), eval_every=2, ckpt_every=2,
                      sample_every=0, log_every=1, sdpa_backend=backend, out=str(tmp_path / "run"))
    train(cfg, data=load_dataset("shapes:24", 32, 0))
    in_steps = {flash for grad, flash in calls if grad}
    in_inference = {flash for grad, flash in calls if not grad}
    assert in_steps == {want_in_steps} and in_inference == {True}
    recorded = json.loads((tmp_path / "run" / "train_config.json").read_text())["sdpa_backend"]
    assert recorded == ("math" if backend == "auto" else "default")
    assert json.loads((tmp_path / "run" / "train_stats.json").read_text())["sdpa_backend"] == recorded
    assert torch.backends.cuda.flash_sdp_enabled()  # the loop leaves the process as it found it


def test_auto_sdpa_backend_keeps_torchs_kernel_for_a_family_that_did_not_ask_for_math(tmp_path):
    """The AR family's Llama trained no faster with the math kernel (bench/RESULTS.md), so "auto" is
    its task's choice, torch's default, and a test family without the attribute gets the default too."""
    import json

    from blinkgen.families import get

    assert get("ar").task_class("ar").cpu_sdpa_backend == "default"
    assert get("diffusion").task_class("diffusion").cpu_sdpa_backend == "math"
    cfg = TrainConfig(family="constant", task="duel", data="shapes:24", size=32, preset="tiny", steps=1,
                      batch_size=4, eval_every=0, ckpt_every=1, sample_every=0, log_every=1, out=str(tmp_path / "run"))
    train(cfg, data=load_dataset("shapes:24", 32, 0))
    assert json.loads((tmp_path / "run" / "train_config.json").read_text())["sdpa_backend"] == "default"
