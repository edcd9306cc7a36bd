"""Solver invariants on an analytic flow: Gaussian data N(0, s^2) under rectified flow has the
exact velocity field and the exact ODE solution x_t = x_1 * sqrt((1-t)^2 s^2 + t^2), so the
global error of each solver can be measured and its convergence order checked."""
import math

import torch
from hypothesis import given, settings, strategies as st

import pytest

from blinkgen.sampling.flow import (SAMPLERS, STOCHASTIC, flow_schedule, nfe, sample_dpmpp_2m, sample_euler,
                                   sample_euler_ancestral, sample_heun)

S = 0.5  # data std


def gaussian_velocity(x, t):
    t = t.double().view(-1, *[1] * (x.dim() - 1))
    var = (1 - t) ** 2 * S**2 + t**2
    x0_hat = (1 - t) * S**2 / var * x.double()  # E[x0 | x_t]
    return ((x.double() - x0_hat) / t).float() if (t > 0).all() else torch.zeros_like(x)


def exact(x1):
    return x1 * S  # t = 0: sqrt(s^2)


def error(sampler, steps, shift=1.0):
    x1 = torch.linspace(-2, 2, 9).view(9, 1)
    ts = flow_schedule(steps, shift)
    out = sampler(gaussian_velocity, x1, ts)
    return (out - exact(x1)).abs().max().item()


def observed_order(sampler, n1=16, n2=32):
    return math.log(error(sampler, n1) / error(sampler, n2), 2)


def test_euler_is_first_order():
    assert 0.8 < observed_order(sample_euler) < 1.3


def test_heun_is_second_order():
    assert 1.7 < observed_order(sample_heun) < 2.5


def test_dpmpp_2m_is_second_order_asymptotically():
    # Measured: order 1.71 from 64 to 128 steps and 1.77 from 128 to 256 (the uniform-t grid
    # keeps the last lambda-steps near t = 0 at a fixed size, so the asymptote arrives late).
    assert observed_order(sample_dpmpp_2m, 64, 128) > 1.5
    # and at equal NFE it is far more accurate than Euler
    assert error(sample_dpmpp_2m, 8) < error(sample_euler, 8) / 4


def noise_for(x, steps, seed=0):
    """A stochastic sampler's per-step draws for x over `steps` steps."""
    return torch.randn((steps, *x.shape), generator=torch.Generator().manual_seed(seed))


def run(name, fn, x, ts, seed=0):
    return fn(fn_v, x, ts, **({"noise": noise_for(x, len(ts) - 1, seed)} if name in STOCHASTIC else {}))


def fn_v(x, t):
    return gaussian_velocity(x, t)


def test_all_ode_solvers_converge():
    for name, fn in SAMPLERS.items():
        if name not in STOCHASTIC:  # an SDE converges in distribution, not pathwise (below)
            assert error(fn, 200) < (1e-2 if name == "euler" else 1e-3), name


def test_nfe_counts_calls():
    for name, fn in SAMPLERS.items():
        calls = []

        def v(x, t):
            calls.append(1)
            return gaussian_velocity(x, t)
        x = torch.ones(2, 1)
        fn(v, x, flow_schedule(6), **({"noise": noise_for(x, 6)} if name in STOCHASTIC else {}))
        assert len(calls) == nfe(name, 6), name


def test_euler_ancestral_samples_the_data_distribution():
    """With the exact velocity of N(0, S^2) data, the ancestral chain's end points have the data's
    spread (mean 0, std S) in the limit, though no single path equals the ODE's. Plugging in the
    posterior mean underestimates the spread by O(1 / steps) (measured with 100,000 chains: std
    0.469 / 0.484 / 0.492 / 0.499 at 50 / 100 / 200 / 1000 steps: the same chains as here, whose
    std has a standard error of ~0.2%)."""
    x1 = torch.randn(100000, 1, generator=torch.Generator().manual_seed(1))
    gap = {}
    for steps in (50, 200, 1000):
        out = sample_euler_ancestral(gaussian_velocity, x1, flow_schedule(steps), noise=noise_for(x1, steps))
        gap[steps] = 1 - float(out.std()) / S
        assert abs(float(out.mean())) < 0.02
    assert gap[50] > gap[200] > 0 and gap[50] / gap[200] > 2.5  # first order in the step count
    assert abs(gap[1000]) < 0.015
    ode = sample_euler(gaussian_velocity, x1, flow_schedule(50))
    out = sample_euler_ancestral(gaussian_velocity, x1, flow_schedule(50), noise=noise_for(x1, 50))
    assert float((out - ode).abs().mean()) > 0.1  # the noise did change the paths


def test_euler_ancestral_is_a_function_of_its_noise():
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(2))
    ts = flow_schedule(8)
    a = sample_euler_ancestral(gaussian_velocity, x.clone(), ts, noise=noise_for(x, 8, 5))
    b = sample_euler_ancestral(gaussian_velocity, x.clone(), ts, noise=noise_for(x, 8, 5))
    c = sample_euler_ancestral(gaussian_velocity, x.clone(), ts, noise=noise_for(x, 8, 6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    # the last step uses no draw: the first steps - 1 draws decide everything
    short = noise_for(x, 8, 5)[:7]
    assert torch.equal(sample_euler_ancestral(gaussian_velocity, x.clone(), ts, noise=short), a)


def test_euler_ancestral_one_step_is_the_data_prediction():
    x = torch.randn(3, 2)
    out = sample_euler_ancestral(gaussian_velocity, x, flow_schedule(1), noise=torch.empty(0, 3, 2))
    assert torch.allclose(out, x - gaussian_velocity(x, torch.ones(3)))  # x0_hat at t = 1 (here 0)


def test_euler_ancestral_refuses_missing_or_short_noise():
    x, ts = torch.zeros(2, 1), flow_schedule(5)
    for bad in (None, torch.zeros(3, 2, 1), torch.zeros(5, 2, 2)):
        with pytest.raises(ValueError, match="euler_a needs noise"):
            sample_euler_ancestral(gaussian_velocity, x, ts, noise=bad)


@settings(max_examples=40, deadline=None)
@given(steps=st.integers(1, 200), shift=st.floats(0.2, 8.0))
def test_schedule_is_decreasing_from_one_to_zero(steps, shift):
    ts = flow_schedule(steps, shift)
    assert len(ts) == steps + 1
    assert ts[0].item() == 1.0 and ts[-1].item() == 0.0
    assert (ts[1:] < ts[:-1]).all()


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), steps=st.integers(1, 12), name=st.sampled_from(sorted(SAMPLERS)))
def test_solvers_are_pure_and_finite(seed, steps, name):
    x = torch.randn(3, 2, generator=torch.Generator().manual_seed(seed))
    a = run(name, SAMPLERS[name], x.clone(), flow_schedule(steps), seed)
    b = run(name, SAMPLERS[name], x.clone(), flow_schedule(steps), seed)
    assert torch.isfinite(a).all() and torch.equal(a, b)


def test_callback_reports_every_step():
    seen = []
    sample_dpmpp_2m(gaussian_velocity, torch.ones(1, 1), flow_schedule(5), lambda i, n, x, x0: seen.append((i, n)))
    assert seen == [(i, 5) for i in range(5)]


@settings(max_examples=40, deadline=None)
@given(st.floats(0.1, 20.0), st.integers(0, 2**31 - 1))
def test_time_shift_is_monotone_fixes_the_ends_and_shift_one_is_the_plain_draw(shift, seed):
    from blinkgen.sampling.flow import draw_timesteps, shift_time

    t = torch.linspace(0, 1, 101, dtype=torch.float64)
    s = shift_time(t, shift)
    assert s[0] == 0 and abs(float(s[-1]) - 1) < 1e-12 and bool((s[1:] >= s[:-1]).all())
    assert bool((s >= t - 1e-12).all()) if shift >= 1 else bool((s <= t + 1e-12).all())  # > 1: toward noise
    g1, g2 = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
    plain = torch.sigmoid(torch.randn((64,), generator=torch.Generator().manual_seed(seed)))
    assert torch.equal(draw_timesteps(g1, 64), plain)  # shift 1 = the stream as it always was
    shifted = draw_timesteps(g2, 64, shift)
    assert torch.allclose(shifted, shift_time(plain, shift)) and torch.equal(g1.get_state(), g2.get_state())


@settings(max_examples=40, deadline=None)
@given(st.floats(0.0, 0.99), st.floats(0.5, 5.0), st.integers(0, 2**31 - 1))
def test_high_noise_share_redraws_only_picked_rows_into_the_top_band(share, shift, seed):
    from blinkgen.sampling.flow import HIGH_FROM, draw_timesteps

    base = draw_timesteps(torch.Generator().manual_seed(seed), 256, shift)
    g = torch.Generator().manual_seed(seed)
    t = draw_timesteps(g, 256, shift, share)
    assert bool(((t > 0) & (t <= 1)).all())
    changed = t != base
    assert bool((t[changed] > HIGH_FROM).all())  # a redrawn row lies in the band (HIGH_FROM, 1]
    if share == 0:  # share 0 draws nothing more: the plain stream, generator state included
        g0 = torch.Generator().manual_seed(seed)
        draw_timesteps(g0, 256, shift)
        assert torch.equal(t, base) and torch.equal(g.get_state(), g0.get_state())


def test_high_noise_share_puts_that_share_of_draws_in_the_top_band():
    from blinkgen.sampling.flow import HIGH_FROM, draw_timesteps

    n = 200_000
    plain = float((draw_timesteps(torch.Generator().manual_seed(0), n) > HIGH_FROM).float().mean())
    assert plain < 0.02  # why the option exists: the logit-normal density barely reaches t = 1
    t = draw_timesteps(torch.Generator().manual_seed(0), n, 1.0, 0.3)
    expected = 0.3 + 0.7 * plain
    assert abs(float((t > HIGH_FROM).float().mean()) - expected) < 0.005  # ~5 standard errors
    top = t[t > 0.95]  # inside the band the redraws are uniform: (0.95, 1] holds about half of them
    assert abs(len(top) / n - (0.15 + 0.7 * float((draw_timesteps(torch.Generator().manual_seed(0), n) > 0.95)
                                                    .float().mean()))) < 0.005


@settings(max_examples=30, deadline=None)
@given(st.floats(0.5, 0.999), st.integers(0, 2**31 - 1))
def test_high_noise_band_starts_where_asked(high_from, seed):
    from blinkgen.sampling.flow import draw_timesteps

    base = draw_timesteps(torch.Generator().manual_seed(seed), 512)
    t = draw_timesteps(torch.Generator().manual_seed(seed), 512, 1.0, 0.5, high_from)
    changed = t != base
    assert bool(changed.any()) and bool((t[changed] > high_from).all()) and bool((t <= 1).all())


def test_train_config_bounds_the_high_noise_share():
    import pytest
    from blinkgen.errors import UserInputError
    from blinkgen.train.config import TrainConfig

    TrainConfig(data="shapes:100", t_high_share=0.5).validate()
    for bad in (-0.1, 1.0):
        with pytest.raises(UserInputError, match="t_high_share"):
            TrainConfig(data="shapes:100", t_high_share=bad).validate()
    TrainConfig(data="shapes:100", t_high_from=0.99).validate()
    for bad in (0.4, 1.0):
        with pytest.raises(UserInputError, match="t_high_from"):
            TrainConfig(data="shapes:100", t_high_from=bad).validate()


def test_the_diffusion_task_draws_its_times_with_the_runs_share():
    from blinkgen.families.diffusion.tasks import DiffusionTask
    from blinkgen.sampling.flow import HIGH_FROM
    from blinkgen.train.config import TrainConfig

    task = object.__new__(DiffusionTask)  # draw() reads only the config and the latents' shape
    task.latents = torch.zeros(1, 4, 8, 8)
    for share in (0.0, 0.6):
        task.cfg = TrainConfig(family="diffusion", t_high_share=share)
        t = task.draw(torch.Generator().manual_seed(1), 4000)["t"]
        assert abs(float((t > HIGH_FROM).float().mean()) - (share + (1 - share) * 0.014)) < 0.03
    task.cfg = TrainConfig(family="diffusion", t_high_share=0.6, t_high_from=0.99)  # the run's band
    t = task.draw(torch.Generator().manual_seed(1), 4000)["t"]
    assert abs(float((t > 0.99).float().mean()) - 0.6) < 0.03
