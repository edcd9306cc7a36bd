"""Our flow samplers against diffusers' schedulers on the same tiny network and schedule.

Why: the speed ladder compares our loop with the loop a diffusers user writes; that comparison is
only fair if both compute the same images. Euler must agree with FlowMatchEulerDiscreteScheduler
to float rounding. DPM-Solver++(2M) must agree with DPMSolverMultistepScheduler on schedules that start at pure
noise (t = 1, where lambda = -inf and the textbook second-order correction of step 2 is exactly
zero), on schedules that start below t = 1, and both with a textbook reference written here.
"""
from __future__ import annotations

from unittest import mock

import pytest
import torch

from blinkgen.families.diffusion import pipeline as diffusion_pipeline
from blinkgen.families.diffusion.pipeline import DiffusionPipeline
from blinkgen.sampling.flow import flow_schedule, sample_dpmpp_2m, sample_euler
from blinkgen.sampling.guidance import cfg_wrap
from blinkgen.text.encoder import TEXT_DIM, TextBatch
from benchload import load_bench
from conftest import make_tiny

TOL = 1e-4

peers = load_bench("peers")


PROMPTS = ["a red circle", "two blue squares on a white background"]


def _fake_text(gen) -> None:
    """Random text states in the generator's prompt memo: the samplers only need some fixed
    conditioning, and skipping MiniLM keeps this file fast."""
    g = torch.Generator().manual_seed(0)
    L = gen.config.get("text_max_tokens", 32)
    for i, p in enumerate(PROMPTS + [gen.config.get("null_prompt", "")]):
        mask = torch.arange(L)[None] < 4 + 3 * i
        states = torch.randn(1, L, TEXT_DIM, generator=g) * mask[..., None]
        gen.memo.rows[p] = TextBatch(states, mask, torch.nn.functional.normalize(torch.randn(1, TEXT_DIM, generator=g), dim=-1))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    torch.set_num_threads(1)
    with mock.patch.object(diffusion_pipeline, "shared_encoder", lambda *a, **k: None):  # MiniLM unused here
        gen = DiffusionPipeline.from_folder(make_tiny("diffusion", tmp_path_factory.mktemp("tiny") / "m"))
    _fake_text(gen)
    cond, uncond = gen.encode_prompts(PROMPTS)
    x = gen.initial_noise([0, 1])
    ours = cfg_wrap(gen.net, cond, uncond, 2.0)
    theirs = peers.cfg_batched(gen.net, cond, uncond, 2.0)
    return gen, x, ours, theirs


def _diff(a, b) -> float:
    return (a - b).abs().max().item()


@pytest.mark.parametrize("steps,shift", [(4, 1.0), (8, 3.0)])
def test_euler_matches_flow_match_euler(setup, steps, shift):
    gen, x, ours, theirs = setup
    ts = flow_schedule(steps, shift)
    a = sample_euler(ours, x, ts)
    b = peers.sample_with_scheduler(peers.flow_match_euler_scheduler(ts), theirs, x)
    assert _diff(a, b) < TOL


@pytest.mark.parametrize("steps,shift", [(4, 1.0), (8, 3.0), (20, 1.0)])
def test_dpmpp2m_matches_diffusers_from_pure_noise(setup, steps, shift):
    gen, x, ours, theirs = setup
    ts = flow_schedule(steps, shift)
    a = sample_dpmpp_2m(ours, x, ts)
    b = peers.sample_with_scheduler(peers.dpm_solver_scheduler(ts), theirs, x)
    assert _diff(a, b) < TOL


def test_dpmpp2m_matches_diffusers_below_t1(setup):
    gen, x, ours, theirs = setup
    ts = torch.linspace(0.999, 0.0, 7)  # diffusers' own flow grid starts at 1 - 1/1000
    a = sample_dpmpp_2m(ours, x, ts)
    b = peers.sample_with_scheduler(peers.dpm_solver_scheduler(ts), theirs, x)
    assert _diff(a, b) < TOL


def _textbook_dpmpp2m(model_fn, x, ts):
    """Lu et al. 2022 Alg. 2 for alpha = 1 - t, sigma = t, with lambda(1) = -inf kept exact:
    then h_prev = inf, r = inf and the second step's correction is exactly zero."""
    lam = lambda t: torch.log((1 - t) / t)  # noqa: E731  (-inf at t = 1)
    ts = ts.double()
    x0_prev = h_prev = None
    for i in range(len(ts) - 1):
        t, tn = ts[i], ts[i + 1]
        x0 = x - t.float() * model_fn(x, t.float().expand(x.shape[0]))
        if tn == 0:
            return x0
        h = lam(tn) - lam(t)
        d = x0 if x0_prev is None or torch.isinf(h_prev) else x0 + (h / (2 * h_prev)).float() * (x0 - x0_prev)
        x = (tn / t).float() * x - ((1 - tn) * torch.expm1(-h)).float() * d
        x0_prev, h_prev = x0, h
    return x


@pytest.mark.parametrize("steps", [4, 8])
def test_ours_and_diffusers_are_the_textbook_limit(setup, steps):
    gen, x, ours, theirs = setup
    ts = flow_schedule(steps, 1.0)
    ref = _textbook_dpmpp2m(ours, x, ts)
    b = peers.sample_with_scheduler(peers.dpm_solver_scheduler(ts), theirs, x)
    assert _diff(ref, b) < TOL
    assert _diff(sample_dpmpp_2m(ours, x, ts), ref) < TOL


def test_naive_peer_is_euler_with_two_pass_cfg(setup):
    gen, x, ours, theirs = setup
    cond, uncond = gen.encode_prompts(PROMPTS)
    a = peers.sample_naive(gen.net, cond, uncond, 2.0, x, steps=5)
    b = sample_euler(ours, x, flow_schedule(5))
    assert _diff(a, b) < TOL


def test_peer_images_decode(setup):
    gen = setup[0]
    for peer in peers.PEERS:
        ims = peers.peer_images(gen, peer, PROMPTS[:1], [3], steps=2, guidance=2.0)
        assert len(ims) == 1 and ims[0].size == (gen.image_size, gen.image_size)


def test_two_pass_guidance_peer_matches_the_batched_one(setup):
    """The issue-14 peer (FlowMatchEuler, CFG as two passes per step) computes our Euler images."""
    gen, x, ours, _ = setup
    cond, uncond = gen.encode_prompts(PROMPTS)
    two = peers.cfg_two_passes(gen.net, cond, uncond, 2.0)
    ts = flow_schedule(6)
    theirs = peers.sample_with_scheduler(peers.flow_match_euler_scheduler(ts), two, x.clone())
    assert _diff(sample_euler(ours, x.clone(), ts), theirs) < TOL
    calls = []
    peers.cfg_two_passes(lambda *a: calls.append(a[0].shape[0]) or torch.zeros_like(a[0]), cond, uncond, 2.0)(x, torch.ones(2))
    assert calls == [2, 2]  # two passes of B rows, not one of 2B
