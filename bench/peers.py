"""The peers of our diffusion sampler, run on OUR network and OUR schedule (DESIGN.md speed ladder).

    naive     Euler, 50 steps, classifier-free guidance as two separate network passes per step
              (the loop a first PyTorch implementation writes).
    diffusers the loop a diffusers user writes: a diffusers scheduler (FlowMatchEulerDiscrete, or
              DPMSolverMultistep configured for flow matching) stepping our DiT, CFG batched the way
              diffusers pipelines batch it (latents doubled, prediction chunked).

Both peers get our schedule (`blinkgen.sampling.flow.flow_schedule`) so a speed or quality gap is
the loop's, never the schedule's. How the DPM scheduler is made to match the textbook algorithm:

- `use_flow_sigmas=True, prediction_type="flow_prediction"`: alpha_t = 1 - sigma, sigma_t = sigma,
  x0 = x - sigma * v -- the flow parameterisation of DPM-Solver++ (Lu et al. 2022).
- `set_timesteps` has no way to take custom sigmas when `use_flow_sigmas` is set (its flow branch
  overwrites custom timesteps with linspace(1 - 1/1000, 0): it never starts at pure noise), so the
  scheduler's `sigmas`/`timesteps` are overwritten after `set_timesteps`, and `set_begin_index(0)`.
- `solver_order=2, solver_type="midpoint"`: the 2M update x0 + (x0 - x0_prev) / (2 r). Its
  `lower_order_final` heuristic (default True) only demotes third-order steps for < 15 steps, so
  for order 2 it changes nothing; with `final_sigmas_type="zero"` the last step is first order and
  at sigma = 0 returns the data prediction, exactly as ours does.
- At t = 1 (alpha = 0) diffusers computes lambda = -inf and lets inf arithmetic make the second
  step's correction vanish (r = h_prev / h = inf): the textbook limit. Our `sample_dpmpp_2m` keeps
  no multistep history after a step from t = 1, which is the same limit, so the two agree to
  float rounding on every schedule (tests/test_peers.py).
"""
from __future__ import annotations

import torch

from blinkgen.sampling.flow import flow_schedule

NUM_TRAIN_TIMESTEPS = 1000  # diffusers' timestep units: t_diffusers = 1000 * sigma; our DiT takes sigma
NAIVE_STEPS = 50


def flow_match_euler_scheduler(ts: torch.Tensor):
    """FlowMatchEulerDiscreteScheduler on the schedule ts (steps + 1 times, 1 -> 0)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    s = FlowMatchEulerDiscreteScheduler(num_train_timesteps=NUM_TRAIN_TIMESTEPS, shift=1.0)  # ts already shifted
    s.set_timesteps(sigmas=ts[:-1].float().tolist())  # it appends the terminal 0 itself
    return s


def dpm_solver_scheduler(ts: torch.Tensor):
    """DPMSolverMultistepScheduler as DPM-Solver++(2M) for flow matching on the schedule ts."""
    from diffusers import DPMSolverMultistepScheduler

    s = DPMSolverMultistepScheduler(num_train_timesteps=NUM_TRAIN_TIMESTEPS, use_flow_sigmas=True,
                                    prediction_type="flow_prediction", flow_shift=1.0, solver_order=2,
                                    algorithm_type="dpmsolver++", solver_type="midpoint",
                                    final_sigmas_type="zero")
    s.set_timesteps(len(ts) - 1)
    s.sigmas = ts.float().clone()  # (steps + 1,), ends in 0
    s.timesteps = ts[:-1].float() * NUM_TRAIN_TIMESTEPS
    s.set_begin_index(0)
    return s


def make_scheduler(kind: str, ts: torch.Tensor):
    if kind == "diffusers_euler":
        return flow_match_euler_scheduler(ts)
    if kind == "diffusers_dpmpp2m":
        return dpm_solver_scheduler(ts)
    raise ValueError(f"unknown diffusers peer {kind!r}")


def sample_with_scheduler(scheduler, model_fn, x: torch.Tensor) -> torch.Tensor:
    """The diffusers loop: for t in scheduler.timesteps: v = model(x, t); x = scheduler.step(...).
    model_fn(x, t) takes our time in [0, 1], so t is divided by the train-timestep count."""
    for t in scheduler.timesteps:
        v = model_fn(x, (t / NUM_TRAIN_TIMESTEPS).expand(x.shape[0]))
        x = scheduler.step(v, t, x, return_dict=False)[0]
    return x


def cfg_batched(net, cond, uncond, guidance: float):
    """CFG as diffusers pipelines write it: one pass over the doubled batch, then chunk."""
    states = torch.cat([uncond.states, cond.states])
    mask = torch.cat([uncond.mask, cond.mask])
    pooled = torch.cat([uncond.pooled, cond.pooled])

    def model_fn(x, t):
        v = net(torch.cat([x, x]), torch.cat([t, t]), states, mask, pooled)
        v_u, v_c = v.chunk(2)
        return v_u + guidance * (v_c - v_u)

    return model_fn


def cfg_two_passes(net, cond, uncond, guidance: float):
    """CFG as two separate network passes per step (the conditional, then the unconditional),
    as a first diffusers loop written from the docs does it."""

    def model_fn(x, t):
        v_c = net(x, t, cond.states, cond.mask, cond.pooled)
        v_u = net(x, t, uncond.states, uncond.mask, uncond.pooled)
        return v_u + guidance * (v_c - v_u)

    return model_fn


def sample_naive(net, cond, uncond, guidance: float, x: torch.Tensor, shift: float = 1.0,
                 steps: int = NAIVE_STEPS) -> torch.Tensor:
    """Euler, `steps` steps, CFG as two separate network passes per step (2 x steps calls)."""
    ts = flow_schedule(steps, shift)
    x = x.float()
    for i in range(steps):
        t = ts[i].expand(x.shape[0])
        v_c = net(x, t, cond.states, cond.mask, cond.pooled)
        v_u = net(x, t, uncond.states, uncond.mask, uncond.pooled)
        x = x + (ts[i + 1] - ts[i]) * (v_u + guidance * (v_c - v_u))
    return x


PEERS = ("naive", "diffusers_euler", "diffusers_dpmpp2m", "diffusers_euler_2pass")
DIFFUSERS_PIPELINE_STEPS = 28  # FlowMatchEulerDiscreteScheduler's pipelines (SD3, Flux) default to 28 steps


@torch.inference_mode()
def peer_latents(gen, peer: str, prompts: list[str], seeds: list[int], steps: int, guidance: float) -> torch.Tensor:
    """Final latents of `gen` (a DiffusionPipeline) sampled by a peer loop; same noise per seed."""
    cond, uncond = gen.encode_prompts(prompts)
    x = gen.initial_noise(seeds)
    if peer == "naive":
        return sample_naive(gen.net, cond, uncond, guidance, x, gen.shift, steps)
    if peer == "diffusers_euler_2pass":  # the issue-14 peer: FlowMatchEuler, CFG as two passes
        sched = flow_match_euler_scheduler(flow_schedule(steps, gen.shift))
        return sample_with_scheduler(sched, cfg_two_passes(gen.net, cond, uncond, guidance), x)
    sched = make_scheduler(peer, flow_schedule(steps, gen.shift))
    return sample_with_scheduler(sched, cfg_batched(gen.net, cond, uncond, guidance), x)


@torch.inference_mode()
def peer_images(gen, peer: str, prompts: list[str], seeds: list[int], steps: int, guidance: float):
    """PIL images from a peer loop, decoded by the model's own autoencoder."""
    from PIL import Image

    from blinkgen.models.autoencoder import to_uint8

    px = to_uint8(gen.ae.decode(peer_latents(gen, peer, prompts, seeds, steps, guidance))).cpu()
    return [Image.fromarray(p.permute(1, 2, 0).numpy()) for p in px]
