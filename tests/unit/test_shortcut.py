"""The shortcut (step-size) input and the distillation targets: a step-size copy starts as its
teacher exactly, plain networks refuse a step size, Euler hands the model the schedule's step and
the other solvers d = 0, two half jumps of the exact flow are one exact jump, and folded guidance
is the CFG wrapper's guidance."""
import math
from types import SimpleNamespace

import pytest
import torch
from hypothesis import given, settings, strategies as st

from blinkgen.families.diffusion.distill import DistillTask, guided_velocity
from blinkgen.models.denoisers import from_preset, has_step_size_input, with_step_size_input
from blinkgen.sampling.flow import flow_schedule, step_size_lookup
from blinkgen.sampling.guidance import cfg_wrap
from blinkgen.text.encoder import TextBatch


def _inputs(B=3, S=16, L=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(B, L, dtype=torch.bool)
    mask[0, 4:] = False
    return (torch.randn(B, 4, S, S, generator=g), torch.rand(B, generator=g), torch.randn(B, L, 384, generator=g),
            mask, torch.randn(B, 384, generator=g))


def _perturbed(preset, seed=0):
    torch.manual_seed(seed)
    net = from_preset(preset, 4, 16)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return net.eval()


@pytest.mark.parametrize("preset", ["tiny", "uvit-tiny", "unet-tiny"])
def test_step_size_copy_starts_as_the_teacher_and_then_learns_d(preset):
    plain = _perturbed(preset)
    x, t, ctx, mask, pooled = _inputs()
    with pytest.raises(ValueError, match="no step-size input"):
        plain(x, t, ctx, mask, pooled, d=torch.zeros(3))
    student = with_step_size_input(plain)
    assert has_step_size_input(student) and not has_step_size_input(plain)
    ref = plain(x, t, ctx, mask, pooled)
    for d in (None, torch.zeros(3), torch.full((3,), 0.5), torch.ones(3)):
        extra = {} if d is None else {"d": d}
        assert torch.equal(student(x, t, ctx, mask, pooled, **extra), ref)  # zero-initialised: exactly the teacher
    # once trained (here: perturbed), d matters, per row, and gradients reach the embedder
    with torch.no_grad():
        for p in student.d_embed.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    d = torch.tensor([0.0, 0.25, 1.0])
    v = student(x, t, ctx, mask, pooled, d=d)
    assert not torch.allclose(v, student(x, t, ctx, mask, pooled, d=torch.zeros(3)))
    one = student(x[1:2], t[1:2], ctx[1:2], mask[1:2], pooled[1:2], d=d[1:2])
    torch.testing.assert_close(v[1:2], one, atol=1e-5, rtol=1e-4)
    v.square().mean().backward()
    assert all(p.grad is not None for p in student.d_embed.parameters())


def test_step_size_copy_keeps_the_teachers_weights_untouched():
    plain = _perturbed("tiny")
    before = {k: v.clone() for k, v in plain.state_dict().items()}
    student = with_step_size_input(plain)
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
    assert all(torch.equal(before[k], v) for k, v in plain.state_dict().items())


@given(steps=st.integers(1, 64), shift=st.sampled_from([1.0, 2.0, 3.0]))
@settings(max_examples=40, deadline=None)
def test_step_size_lookup_gives_each_steps_size(steps, shift):
    ts = flow_schedule(steps, shift)
    d_of = step_size_lookup(ts)
    sizes = [float(d_of(ts[i].expand(2))[0]) for i in range(steps)]
    assert math.isclose(sum(sizes), 1.0, abs_tol=1e-5)
    assert all(s > 0 for s in sizes)
    if shift == 1.0:
        assert all(math.isclose(s, 1.0 / steps, rel_tol=1e-5) for s in sizes)
    with pytest.raises(KeyError):
        d_of(torch.zeros(2))  # t = 0 starts no step


S = 0.5  # std of the Gaussian data whose rectified flow is known exactly


def _var(t):
    return (1 - t) ** 2 * S**2 + t**2


def exact_average_velocity(x, t, *text, d):
    """The exact shortcut of Gaussian data: (x_t - x_{t-d}) / d along the true ODE path, whose
    solution scales x by sqrt(var(t)); d = 0 is the instantaneous velocity."""
    t, d = t.double().view(-1, 1, 1, 1), d.double().view(-1, 1, 1, 1)
    x = x.double()
    inst = (x - (1 - t) * S**2 / _var(t) * x) / t
    jump = x * (1 - torch.sqrt(_var(t - d) / _var(t))) / torch.where(d > 0, d, torch.ones_like(d))
    return torch.where(d > 0, jump, inst).float()


def test_two_half_jumps_of_the_exact_flow_are_one_exact_jump():
    levels = 5
    task = SimpleNamespace(ema=exact_average_velocity, levels=levels)
    level = torch.tensor([0, 1, 2, 3, 4])
    jump = torch.pow(2.0, -level.float())
    t = torch.tensor([1.0, 0.5, 0.75, 0.125, 1.0])
    x = torch.linspace(-2, 2, 5 * 4).view(5, 4, 1, 1)
    target = DistillTask._two_half_jumps(task, x, t, jump, level, [])
    torch.testing.assert_close(target, exact_average_velocity(x, t, d=jump), atol=1e-5, rtol=1e-5)


def test_the_finest_jump_is_made_of_two_flow_steps():
    seen = []

    def ema(x, t, *text, d):
        seen.append(d.clone())
        return torch.ones_like(x)

    task = SimpleNamespace(ema=ema, levels=3)
    level = torch.tensor([3, 2])
    DistillTask._two_half_jumps(task, torch.zeros(2, 1, 1, 1), torch.ones(2), torch.pow(2.0, -level.float()), level, [])
    assert all(torch.equal(d, torch.tensor([0.0, 0.125])) for d in seen)  # level 3 = 1/8: halves at d = 0


def test_folded_guidance_is_the_cfg_wrapper():
    net = _perturbed("tiny")
    x, t, ctx, mask, pooled = _inputs()
    t = torch.full((3,), 0.6)
    null = (torch.zeros_like(ctx), torch.ones_like(mask), torch.zeros_like(pooled))
    want = cfg_wrap(net, TextBatch(ctx, mask, pooled), TextBatch(*null), 4.0)(x, t)
    torch.testing.assert_close(guided_velocity(net, x, t, (ctx, mask, pooled), null, 4.0), want)
    # guidance 1 is the conditional pass; outside the interval rows take it too
    cond = net(x, t, ctx, mask, pooled)
    assert torch.equal(guided_velocity(net, x, t, (ctx, mask, pooled), null, 1.0), cond)
    rows = torch.tensor([0.1, 0.6, 0.95])
    g = guided_velocity(net, x, rows, (ctx, mask, pooled), null, 4.0, interval=(0.2, 0.9))
    full = guided_velocity(net, x, rows, (ctx, mask, pooled), null, 4.0)
    c = net(x, rows, ctx, mask, pooled)
    torch.testing.assert_close(g[0], c[0])
    torch.testing.assert_close(g[2], c[2])
    torch.testing.assert_close(g[1], full[1])


def test_distill_settings_are_checked():
    from blinkgen.errors import UserInputError
    from blinkgen.train.config import TrainConfig

    for bad in ({"distill_steps": 3}, {"distill_base_steps": 24}, {"distill_steps": 64, "distill_base_steps": 32},
                {"distill_objective": "reflow"}, {"self_consistency_fraction": 1.5}):
        with pytest.raises(UserInputError):
            TrainConfig(**bad).validate()


def test_the_pipeline_gives_euler_the_step_size_and_other_solvers_d_zero(tmp_path):
    import blinkgen
    from blinkgen.families.diffusion.folder import tiny
    from blinkgen.pipeline import Request

    pipe = blinkgen.load(str(tiny(tmp_path / "shortcut", shortcut=True)))
    assert pipe.defaults.sampler == "euler" and pipe.defaults.guidance == 1.0
    seen = []
    handle = pipe.dit.register_forward_pre_hook(lambda m, args, kw: seen.append(kw.get("d")), with_kwargs=True)
    try:
        pipe.sample([Request("a red circle", 1)], pipe.settings(steps=4))
        assert [float(d[0]) for d in seen] == [0.25] * 4
        seen.clear()
        pipe.sample([Request("a red circle", 1)], pipe.settings(steps=4, sampler="dpmpp2m"))
        assert len(seen) == 4 and all(float(d.abs().max()) == 0.0 for d in seen)
        seen.clear()
        plain = blinkgen.load(str(tiny(tmp_path / "plain")))
        plain.dit.register_forward_pre_hook(lambda m, args, kw: seen.append(kw.get("d")), with_kwargs=True)
        plain.sample([Request("a red circle", 1)], plain.settings(steps=2, sampler="euler"))
        assert seen == [None, None]  # a plain model is called as before
    finally:
        handle.remove()
