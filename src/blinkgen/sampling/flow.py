"""Schedules and ODE solvers for rectified-flow models, as pure functions (after: k-diffusion).

Convention (as in SD3 / rectified flow): x_t = (1 - t) * x_0 + t * noise, t = 1 is pure noise,
t = 0 is data; the network predicts the velocity v = noise - x_0, so dx/dt = v and the
data prediction is x_0 = x_t - t * v.

The path itself -- `interpolate`, `velocity_target`, `draw_timesteps` -- is what training
(families/diffusion/tasks.py) regresses on; it lives here, beside the solvers that integrate it,
so both sides read one definition.

A solver is `sample_x(model_fn, x, ts, callback=None) -> x_0` where `model_fn(x, t) -> v` takes a
(B,) tensor of times, `ts` is a decreasing 1-D float tensor from 1 to 0 (a schedule), and
`callback(i, n, x, x0_pred)` is called after each step. Solver state is float32 throughout.
The stochastic sampler (`euler_a`, in STOCHASTIC) also takes `noise`, every step's fresh
Gaussian draw as one tensor, so it stays a pure function of its inputs.
"""
from __future__ import annotations

from typing import Callable

import torch

ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Callback = Callable[[int, int, torch.Tensor, torch.Tensor], None] | None


def interpolate(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The point x_t = (1 - t) x_0 + t noise on the straight path. x0, noise: (B, ...); t: (B,)
    in [0, 1] (1 = pure noise). -> (B, ...)."""
    tt = t.view(-1, *([1] * (x0.dim() - 1)))  # (B, 1, ..., 1)
    return (1 - tt) * x0 + tt * noise


HIGH_FROM = 0.9  # draw_timesteps' default high-noise band: (0.9, 1] (--t-high-from)


def velocity_target(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """d x_t / dt = noise - x_0: what the network learns to predict (the same for every t)."""
    return noise - x0


def multiscale_mse(pred: torch.Tensor, target: torch.Tensor, extra_scales: int = 0) -> torch.Tensor:
    """Simple diffusion's multiscale training loss (Hoogeboom, Heek & Salimans 2023, "simple
    diffusion", sec. 3.3): the mean squared error at full resolution plus, for each of
    `extra_scales` halvings, the mean squared error of both tensors average-pooled 2x further
    (a 16x16 latent with 3 extra scales adds 8x8, 4x4 and 2x2). Pooling averages away what a
    position cannot predict (fine detail, noise), so the coarse terms weigh the layout -- where
    blobs stand, how many -- far above its share of the full-resolution error. extra_scales = 0 is
    plain MSE, bit for bit.

    pred, target: (B, C, H, W), H and W divisible by 2**extra_scales. -> scalar float32.
    ValueError on a negative extra_scales or a side that does not halve that often."""
    if extra_scales < 0:
        raise ValueError(f"extra_scales must be >= 0, got {extra_scales}")
    if pred.shape[-1] % (2 ** extra_scales) or pred.shape[-2] % (2 ** extra_scales):
        raise ValueError(f"a {tuple(pred.shape[-2:])} tensor cannot be halved {extra_scales} times")
    pred, target = pred.float(), target.float()
    loss = torch.nn.functional.mse_loss(pred, target)
    for _ in range(extra_scales):
        pred = torch.nn.functional.avg_pool2d(pred, 2)
        target = torch.nn.functional.avg_pool2d(target, 2)
        loss = loss + torch.nn.functional.mse_loss(pred, target)
    return loss


def shift_time(t: torch.Tensor, shift: float) -> torch.Tensor:
    """SD3's time shift (Esser et al. 2024, eq. 23): t' = s t / (1 + (s - 1) t), elementwise on
    times in [0, 1]. Monotone, fixes 0 and 1; s > 1 moves times toward the noise end (t = 1);
    s = 1 is the identity."""
    return shift * t / (1.0 + (shift - 1.0) * t)


def draw_timesteps(g: torch.Generator, B: int, shift: float = 1.0, high_share: float = 0.0,
                   high_from: float = HIGH_FROM) -> torch.Tensor:
    """(B,) training times in (0, 1] from the logit-normal density (SD3, Esser et al. 2024: sigmoid
    of a standard normal), which spends more training on the middle of the path than on its ends,
    then `shift_time` by `shift` (> 1: more training at high noise, where a scene's layout --
    where objects go, how many -- is decided).

    high_share in [0, 1): that share of the rows (each row independently) is redrawn uniformly
    from (high_from, 1] (high_from in [0, 1)), the start of every sampler's path. The logit-normal
    density vanishes at t = 1 (0.16% of draws above 0.95), so a network trained on it alone has
    barely seen pure noise, where it should predict E[image | prompt], and its first step at
    generation takes the layout from the noise instead of the prompt (after Lin et al. 2024, "Common diffusion noise
    schedules and sample steps are flawed": train where the sampler starts). The draws use the
    generator identically for every shift, and draw nothing more when high_share is 0, so shift
    1 and share 0 reproduce the plain stream bit for bit."""
    t = torch.sigmoid(torch.randn((B,), generator=g))
    t = t if shift == 1.0 else shift_time(t, shift)
    if high_share > 0:
        pick, u = torch.rand((B,), generator=g), torch.rand((B,), generator=g)
        t = torch.where(pick < high_share, 1.0 - (1.0 - high_from) * u, t)
    return t


def flow_schedule(steps: int, shift: float = 1.0) -> torch.Tensor:
    """`steps + 1` times from 1 to 0. `shift` > 1 spends more steps at high noise (SD3's
    time shift t' = s t / (1 + (s - 1) t)); 1 gives a uniform grid."""
    return shift_time(torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64), shift).float()


def step_size_lookup(ts: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """For a step-size-conditioned (shortcut) model sampled by Euler on the schedule ts: a
    function t (B,) -> d (B,), the size ts[i] - ts[i + 1] of the step that starts at t = ts[i]
    (after: Frans et al. 2024, who sample with d = 1/K on K uniform steps). The solver calls the
    model with every row at the same time, so row 0 decides (one host read per step). KeyError
    for a time that is not a step start of ts."""
    ts = ts.float()
    sizes = {float(ts[i]): float(ts[i] - ts[i + 1]) for i in range(len(ts) - 1)}

    def d_of(t: torch.Tensor) -> torch.Tensor:
        return torch.full_like(t, sizes[float(t[0])])

    return d_of


def _tvec(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return t.to(x.device, torch.float32).expand(x.shape[0])


def sample_euler(model_fn: ModelFn, x: torch.Tensor, ts: torch.Tensor, callback: Callback = None) -> torch.Tensor:
    """Euler's method on dx/dt = v (first order; NFE = steps)."""
    x = x.float()
    n = len(ts) - 1
    for i in range(n):
        t, t_next = ts[i], ts[i + 1]
        v = model_fn(x, _tvec(t, x)).float()
        if callback is not None:
            callback(i, n, x, x - t * v)
        x = x + (t_next - t) * v
    return x


def sample_heun(model_fn: ModelFn, x: torch.Tensor, ts: torch.Tensor, callback: Callback = None) -> torch.Tensor:
    """Heun's method (explicit trapezoid; Karras et al. 2022, Alg. 1): second order, NFE = 2*steps - 1
    (the last step to t = 0 is an Euler step, since the correction would evaluate at t = 0)."""
    x = x.float()
    n = len(ts) - 1
    for i in range(n):
        t, t_next = ts[i], ts[i + 1]
        v = model_fn(x, _tvec(t, x)).float()
        if callback is not None:
            callback(i, n, x, x - t * v)
        x_pred = x + (t_next - t) * v
        if t_next > 0:
            v2 = model_fn(x_pred, _tvec(t_next, x)).float()
            x = x + (t_next - t) * 0.5 * (v + v2)
        else:
            x = x_pred
    return x


def sample_dpmpp_2m(model_fn: ModelFn, x: torch.Tensor, ts: torch.Tensor, callback: Callback = None) -> torch.Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, Alg. 2) in data prediction, written for the flow
    parameterisation alpha_t = 1 - t, sigma_t = t, lambda_t = log(alpha_t / sigma_t).
    Second order multistep; NFE = steps. The first step is first order (no history), and the
    last step to t = 0 returns the data prediction (lambda = +inf). A step that starts at t = 1
    (lambda = -inf, alpha = 0) leaves no history: its h is infinite, so the textbook second-order
    correction of the next step is exactly zero (r = h_prev / h = inf); this is also what
    diffusers' DPMSolverMultistepScheduler computes."""
    x = x.float()
    n = len(ts) - 1
    ts = ts.double()
    lam = lambda t: torch.log((1.0 - t) / t)  # noqa: E731
    x0_prev, h_prev = None, None
    for i in range(n):
        t, t_next = ts[i], ts[i + 1]
        v = model_fn(x, _tvec(t, x)).float()
        x0 = x - t.float() * v
        if callback is not None:
            callback(i, n, x, x0)
        if t_next == 0:
            x = x0
            break
        # at t = 1, alpha = 0 and lambda = -inf: x_next = (t_next / 1) x + (1 - t_next) x0 is the
        # exact limit of the update below; the clamp only keeps the log finite
        t_c = t.clamp(max=1.0 - 1e-7)
        at_noise = bool(t >= 1.0)
        h = lam(t_next) - lam(t_c)
        if x0_prev is None or h_prev is None:
            d = x0
        else:
            r = h_prev / h
            d = (1.0 + 1.0 / (2.0 * r)).float() * x0 - (1.0 / (2.0 * r)).float() * x0_prev
        x = (t_next / t_c).float() * x - ((1.0 - t_next) * torch.expm1(-h)).float() * d
        x0_prev, h_prev = (None, None) if at_noise else (x0, h)
    return x


def sample_euler_ancestral(model_fn: ModelFn, x: torch.Tensor, ts: torch.Tensor, callback: Callback = None,
                           noise: torch.Tensor | None = None) -> torch.Tensor:
    """Euler ancestral: each step t -> s lands on the posterior q(x_s | x_t, x0 = x0_hat), i.e.
    DDPM's ancestral step (DDIM with eta = 1, Song et al. 2021, eq. 12; k-diffusion's
    `sample_euler_ancestral`), written for the flow path alpha_t = 1 - t, sigma_t = t:
        x0_hat = x - t v,  eps_hat = x + (1 - t) v,
        x_s = (1 - s) x0_hat + sqrt(s^2 - c^2) eps_hat + c z,  c = s sqrt(1 - SNR_t / SNR_s),
    SNR_t = ((1 - t) / t)^2 (0 at t = 1, so the first step from pure noise draws c = s), z =
    noise[i]. The last step (s = 0) returns x0_hat. Fresh noise every step lets later steps undo
    what earlier ones got wrong (Karras et al. 2022, sec. 4), which an imperfect network needs
    (bench/RESULTS.md, "Ancestral sampling"); as an SDE it converges to the data distribution,
    not pathwise, so it needs more steps than the ODE solvers for the same precision.

    noise: (n, B, ...) float, n >= len(ts) - 2 (step i uses noise[i]; none is used for the last
    step), standard normal. NFE = steps. Raises ValueError without noise or with too few draws."""
    n = len(ts) - 1
    if noise is None or noise.shape[0] < n - 1 or tuple(noise.shape[1:]) != tuple(x.shape):
        raise ValueError(f"euler_a needs noise of shape ({max(n - 1, 0)}+, {', '.join(map(str, x.shape))}), "
                         f"got {None if noise is None else tuple(noise.shape)}")
    x = x.float()
    ts = ts.double()
    for i in range(n):
        t, s = ts[i], ts[i + 1]
        v = model_fn(x, _tvec(t, x)).float()
        x0 = x - t.float() * v
        if callback is not None:
            callback(i, n, x, x0)
        if s == 0:
            x = x0
            break
        eps = x + (1.0 - t).float() * v
        # SNR_t / SNR_s, in [0, 1)
        snr_ratio = torch.zeros_like(t) if t >= 1 else ((1.0 - t) / t) ** 2 / ((1.0 - s) / s) ** 2
        c = s * torch.sqrt((1.0 - snr_ratio).clamp(min=0.0))
        x = (1.0 - s).float() * x0 + torch.sqrt((s * s - c * c).clamp(min=0.0)).float() * eps \
            + c.float() * noise[i].to(x.device, torch.float32)
    return x


SAMPLERS: dict[str, Callable] = {"euler": sample_euler, "heun": sample_heun, "dpmpp2m": sample_dpmpp_2m,
                                 "euler_a": sample_euler_ancestral}
STOCHASTIC = frozenset({"euler_a"})  # samplers that take `noise` (one fresh draw per step)


def nfe(sampler: str, steps: int) -> int:
    """Network evaluations per image (before CFG doubling)."""
    return 2 * steps - 1 if sampler == "heun" else steps
