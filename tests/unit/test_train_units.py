"""Fast invariants of the training machinery (no subprocesses)."""
import json

import pytest
import torch
from hypothesis import given, settings, strategies as st

from blinkgen.errors import ModelLoadError, UserInputError
from blinkgen.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from blinkgen.train.config import TrainConfig
from blinkgen.train.loop import BatchOrder
from blinkgen.train.schedule import lr_at
from conftest import write_pre_protocol_checkpoint


@settings(max_examples=50, deadline=None)
@given(n=st.integers(2, 300), B=st.integers(1, 130), seed=st.integers(0, 10**6))
def test_batch_order_visits_every_image_once_per_epoch(n, B, seed):
    order = BatchOrder(n, seed)
    steps = -(-2 * n // B)  # enough steps to cover two epochs
    stream = torch.cat([order.indices(s, B) for s in range(steps)])[: 2 * n]
    assert sorted(stream[:n].tolist()) == list(range(n))
    assert sorted(stream[n:].tolist()) == list(range(n))
    again = BatchOrder(n, seed)  # a function of (seed, step) only: resume needs no state
    assert torch.equal(again.indices(steps - 1, B), order.indices(steps - 1, B))


def test_lr_schedule_warms_up_then_decays_to_floor():
    lrs = [lr_at(s, 1e-3, 10, 100, 0.1) for s in range(100)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert lr_at(100, 1e-3, 10, 100, 0.1) == pytest.approx(1e-4)


@given(decay=st.floats(0.01, 1.0), warmup=st.integers(0, 50), total=st.integers(60, 5000),
       floor=st.floats(0.0, 1.0))
def test_wsd_schedule_holds_the_peak_then_decays_to_the_floor(decay, warmup, total, floor):
    lrs = [lr_at(s, 1.0, warmup, total, floor, decay) for s in range(warmup, total + 3)]
    assert all(a >= b - 1e-12 for a, b in zip(lrs, lrs[1:]))  # never rises after warm-up
    assert lrs[-1] == pytest.approx(floor) and lrs[-3] == pytest.approx(floor)
    hold_end = warmup + int((1 - decay) * (total - warmup))  # the decay starts after this step
    assert all(lr == pytest.approx(1.0) for lr in lrs[: hold_end - warmup + 1])
    # decay 1 is the plain cosine: half-way through it the rate is half-way to the floor
    mid = warmup + (total - warmup) // 2
    if (total - warmup) % 2 == 0:
        assert lr_at(mid, 1.0, warmup, total, floor, 1.0) == pytest.approx((1 + floor) / 2)


def test_schedule_settings_are_checked():
    for bad in (dict(decay_fraction=0.0), dict(decay_fraction=1.5), dict(min_lr_ratio=-0.1), dict(min_lr_ratio=2.0)):
        with pytest.raises(UserInputError, match=next(iter(bad))):
            TrainConfig(**bad).validate()


def test_checkpoint_round_trip_and_pruning(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    ema = torch.nn.Linear(4, 3)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for _ in range(3):
        model(torch.randn(5, 4)).pow(2).mean().backward()
        opt.step()
    for step in (10, 20, 30):
        save_checkpoint(tmp_path, step, model, ema, opt, {"best": 1.5}, keep=2)
    ck = latest_checkpoint(tmp_path)
    assert ck.name == "step-00000030"
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("step-*")) == ["step-00000020", "step-00000030"]
    m2, e2 = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)
    o2 = torch.optim.AdamW(m2.parameters(), lr=1e-3)
    st = load_checkpoint(ck, m2, e2, o2)
    assert st["step"] == 30 and st["best"] == 1.5
    assert torch.equal(m2.weight, model.weight) and torch.equal(e2.bias, ema.bias)
    s1, s2 = opt.state_dict(), o2.state_dict()
    for k in s1["state"]:
        for name, v in s1["state"][k].items():
            assert torch.equal(torch.as_tensor(v), torch.as_tensor(s2["state"][k][name]))
    assert not list(tmp_path.rglob("*.pkl")) and not list(tmp_path.rglob("*.pt"))
    assert (ck / "optimizer.model.safetensors").is_file()  # one file per named optimizer


def _adamw_pair(seed):
    torch.manual_seed(seed)
    model = torch.nn.ModuleDict({"g": torch.nn.Linear(4, 3), "d": torch.nn.Linear(3, 1)})
    opts = {"d": torch.optim.AdamW(model["d"].parameters(), lr=1e-3),
            "g": torch.optim.AdamW(model["g"].parameters(), lr=2e-3)}
    return model, opts


def test_named_optimizers_round_trip_one_file_each(tmp_path):
    model, opts = _adamw_pair(0)
    for _ in range(2):
        model["d"](model["g"](torch.randn(5, 4))).pow(2).mean().backward()
        for o in opts.values():
            o.step()
    save_checkpoint(tmp_path, 7, model, None, opts, {})
    ck = latest_checkpoint(tmp_path)
    assert sorted(p.name for p in ck.glob("optimizer*")) == ["optimizer.d.safetensors", "optimizer.g.safetensors"]
    m2, o2 = _adamw_pair(1)
    load_checkpoint(ck, m2, None, o2)
    for name in opts:
        a, b = opts[name].state_dict(), o2[name].state_dict()
        assert a["param_groups"][0]["lr"] == b["param_groups"][0]["lr"]  # each file went to its own optimizer
        assert all(torch.equal(a["state"][k]["exp_avg"], b["state"][k]["exp_avg"]) for k in a["state"])
    with pytest.raises(ModelLoadError, match="optimizers"):  # a task with other names is refused
        load_checkpoint(ck, m2, None, {"d": o2["d"]})


def test_pre_protocol_checkpoint_loads_as_the_single_optimizer(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(5, 4)).pow(2).mean().backward()
    opt.step()
    save_checkpoint(tmp_path, 3, model, None, {"model": opt}, {"best": 0.5})
    ck = latest_checkpoint(tmp_path)
    write_pre_protocol_checkpoint(ck)
    m2 = torch.nn.Linear(4, 3)
    o2 = torch.optim.AdamW(m2.parameters(), lr=1e-3)
    st = load_checkpoint(ck, m2, None, {"model": o2})
    assert st["step"] == 3 and torch.equal(m2.weight, model.weight)
    assert torch.equal(o2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    with pytest.raises(ModelLoadError, match="one unnamed optimizer"):
        load_checkpoint(ck, *_adamw_pair(2)[:1], None, _adamw_pair(2)[1])


def test_incomplete_checkpoint_is_reported(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "latest").write_text("step-00000005\n")
    with pytest.raises(Exception, match="incomplete"):
        latest_checkpoint(tmp_path)


@pytest.mark.parametrize("field, value, msg", [
    ("family", "vae9", "family must be"), ("size", 48, "size must be"), ("steps", 0, "steps must be"),
    ("lr", 2.0, "lr must be"), ("caption_dropout", 1.0, "caption_dropout"), ("mixed_precision", "fp8", "mixed_precision"),
    ("sdpa_backend", "flash", "sdpa_backend must be auto, math or default"),
])
def test_train_config_validation(field, value, msg):
    with pytest.raises(UserInputError, match=msg):
        TrainConfig(**{field: value}).validate()


def test_train_config_json_round_trip_rejects_unknown(tmp_path):
    cfg = TrainConfig(steps=7, data="shapes:10")
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(UserInputError, match="unknown training options"):
        TrainConfig.from_dict({"stpes": 3})
    p = tmp_path / "c.json"
    p.write_text(json.dumps({"steps": 9}))
    assert TrainConfig.from_json(p).steps == 9


@pytest.mark.parametrize("family, task, want", [
    ("diffusion", "", ("diffusion", "diffusion")), ("diffusion", "autoencoder", ("diffusion", "autoencoder")),
    ("autoencoder", "", ("diffusion", "autoencoder")), ("ar", "", ("ar", "ar")), ("tokenizer", "", ("ar", "tokenizer")),
    ("maskgit", "", ("ar", "maskgit")), ("ar", "maskgit", ("ar", "maskgit")), ("maskgit", "maskgit", ("ar", "maskgit")),
])
def test_train_config_names_a_family_and_a_task(family, task, want):
    """--family names a registered family (its default task unless --task is given) or one of the
    older spellings, which name the task too."""
    fam, t = TrainConfig(family=family, task=task).validate().target()
    assert (fam.name, t) == want


@pytest.mark.parametrize("family, task, msg", [
    ("diffusion", "distill9", "has no task"), ("maskgit", "tokenizer", "means the ar family's"),
    ("gan9", "", "family must be one of"),
])
def test_train_config_refuses_unknown_tasks_in_one_line(family, task, msg):
    with pytest.raises(UserInputError, match=msg) as e:
        TrainConfig(family=family, task=task).validate()
    assert "\n" not in str(e.value)


def test_sdpa_backend_auto_is_the_tasks_choice_on_a_cpu_only():
    from blinkgen.train.config import resolve_sdpa_backend, sdpa_context

    assert resolve_sdpa_backend("auto", "cpu", "math") == "math"
    assert resolve_sdpa_backend("auto", "cpu") == "default"  # a task that did not choose
    assert resolve_sdpa_backend("auto", "cuda", "math") == "default"
    assert resolve_sdpa_backend("default", "cpu") == "default" and resolve_sdpa_backend("math", "cuda") == "math"
    with pytest.raises(ValueError, match="resolved"):
        sdpa_context("auto")


def test_sdpa_math_gives_the_same_attention_as_torch_default():
    """The math backend is a speed choice, not another model: forward and input gradients agree with
    torch's default kernel to float32 rounding."""
    import torch
    import torch.nn.functional as F

    from blinkgen.train.config import sdpa_context

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 4, 16, 32, generator=g, requires_grad=True) for _ in range(3))
    mask = torch.arange(16).expand(2, 1, 16, 16) < 11
    outs = []
    for name in ("default", "math"):
        with sdpa_context(name):
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            grads = torch.autograd.grad(o.square().sum(), (q, k, v))
        outs.append((o.detach(), grads))
    (o1, g1), (o2, g2) = outs
    torch.testing.assert_close(o1, o2, rtol=1e-5, atol=1e-5)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
