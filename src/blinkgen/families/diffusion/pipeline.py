"""The diffusion family's pipeline: text -> MiniLM -> DiT velocity field -> ODE solver over
latents -> autoencoder decoder -> pixels. The model folder is described in folder.py.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from ...models.autoencoder import AutoencoderKL, to_uint8
from ...models.dit import DiT
from ...pipeline import Pipeline, Request, SampleResult, Settings
from ...precision import dtype_of
from ...sampling.flow import SAMPLERS, flow_schedule
from ...sampling.guidance import cfg_wrap
from ...sampling.noise import vary_gaussian
from ...errors import UserInputError
from ...text.encoder import DEFAULT_MAX_TOKENS, TextBatch, shared_encoder
from ...text.style import MAX_STYLE_CHARS, NO_STYLE, styled
from .folder import DEFAULT_SETTINGS, NULL_PROMPT, load_diffusion_folder, save_diffusion_folder


@dataclass(frozen=True)
class DiffusionSettings(Settings):
    """steps: ODE solver steps (network evaluations: `sampling.flow.nfe`); guidance: CFG scale,
    run as one batched pass of [cond; uncond]; sampler: euler | heun | dpmpp2m; style: a style
    phrase appended to every prompt as "<prompt> in <style> style" (text/style.py) -- the model
    folder's `defaults.style` when not given, "none" for none; a model that lists `styles` in its
    config accepts only those. negative_prompt: the unconditional branch of guidance encodes it
    instead of the null prompt (same single batched pass; no effect at guidance 1).
    guidance_interval (lo, hi) in [0, 1]: apply guidance only for
    lo <= t <= hi (sampling/guidance.py), the model's default when not given; (0, 1) = always."""

    guidance_interval: tuple[float, float] | None = None


class DiffusionPipeline(Pipeline):
    family = "diffusion"
    samplers = tuple(SAMPLERS)
    settings_type = DiffusionSettings
    supports = frozenset({"style", "negative_prompt", "variation"})

    # prompt encodings kept: each is 32 x 384 fp32 states (~49 KB), so 512 cap the memo at ~25 MB
    MEMO_MAX = 512

    def __init__(self, dit: DiT, ae: AutoencoderKL, config: dict, name: str = "diffusion",
                 device="cpu", dtype: str = "fp32"):
        self.dit = dit.eval().requires_grad_(False)
        self.ae = ae.eval().requires_grad_(False)
        self.config = config
        self.name = name
        self.device = torch.device(device)
        self.dtype = dtype_of(dtype)
        self.dit.to(self.device, self.dtype)
        self.ae.to(self.device)
        self.image_size = int(config["image_size"])
        d = {**DEFAULT_SETTINGS, **config.get("defaults", {})}
        self.defaults = DiffusionSettings(int(d["steps"]), float(d["guidance"]), str(d["sampler"]),
                                          style=d.get("style") or None,
                                          guidance_interval=_interval(d.get("guidance_interval")))
        self.styles = tuple(config.get("styles") or ())  # the styles the model was trained on
        self.shift = float(config.get("schedule_shift", 1.0))
        self.text = shared_encoder("cpu")
        self._memo: dict[str, TextBatch] = {}

    def settings(self, steps=None, guidance=None, sampler=None, **extra) -> DiffusionSettings:
        """As `Pipeline.settings`; style None (or absent) = the model's default style, "none" or
        "" = no style phrase."""
        style = extra.get("style")
        extra["style"] = self.defaults.style if style is None else (None if style in NO_STYLE else style)
        gi = extra.get("guidance_interval")
        extra["guidance_interval"] = self.defaults.guidance_interval if gi is None else _interval(gi)
        return super().settings(steps, guidance, sampler, **extra)

    def _check_settings(self, settings: DiffusionSettings) -> None:
        st = settings.style
        if st is None:
            return
        if not isinstance(st, str) or len(st) > MAX_STYLE_CHARS or not st.strip():
            raise UserInputError(f"style must be a short phrase (at most {MAX_STYLE_CHARS} characters), got {st!r}")
        if self.styles and st not in self.styles:
            raise UserInputError(f"unknown style {st!r} for this model; it knows {', '.join(self.styles)} "
                                 "(or 'none' for no style phrase)")

    @classmethod
    def from_folder(cls, folder, device="cpu", dtype="fp32") -> "DiffusionPipeline":
        dit, ae, config = load_diffusion_folder(folder)
        return cls(dit, ae, config, name=Path(folder).name, device=device, dtype=dtype)

    def save(self, path) -> Path:
        return save_diffusion_folder(path, self.dit, self.ae, {k: v for k, v in self.config.items()
                                                               if k not in ("dit", "family")})

    def net(self, x, t, states, mask, pooled):
        """The network call with the precision policy: DiT in self.dtype, output in fp32.
        x (B, C, S, S), t (B,), states (B, L, 384), mask (B, L) bool, pooled (B, 384) -> v (B, C, S, S)."""
        dt = self.dtype
        v = self.dit(x.to(dt), t.to(dt), states.to(self.device, dt), mask.to(self.device), pooled.to(self.device, dt))
        return v.float()

    def encode_prompts(self, prompts: list[str], negative_prompt: str | None = None) -> tuple[TextBatch, TextBatch]:
        """-> (cond, uncond), each B rows of (L, 384) states; uncond is the model's null prompt,
        or `negative_prompt` when given (the negative prompt takes the null prompt's place in
        guidance: after the Stable Diffusion web UIs' negative prompts). Prompts are encoded
        padded to the fixed context length, so a prompt's states never depend on which other
        prompts share the batch (and shapes stay static); the prompts not yet memoised are
        encoded together in one batched pass."""
        L = int(self.config.get("text_max_tokens", DEFAULT_MAX_TOKENS))
        null_prompt = self.config.get("null_prompt", NULL_PROMPT) if negative_prompt is None else negative_prompt
        self._encode_missing(list(prompts) + [null_prompt], L)
        cond = TextBatch.cat([self._memo[p] for p in prompts])
        null = self._memo[null_prompt]
        B = len(prompts)
        uncond = TextBatch(null.states.expand(B, -1, -1), null.mask.expand(B, -1), null.pooled.expand(B, -1))
        return cond.to(self.device), uncond.to(self.device)

    def _encode_missing(self, prompts: list[str], L: int) -> None:
        missing = list(dict.fromkeys(p for p in prompts if p not in self._memo))
        if not missing:
            return
        if len(self._memo) + len(missing) > self.MEMO_MAX:  # a server sees unboundedly many prompts
            self._memo.clear()
            missing = list(dict.fromkeys(prompts))
        tb = self.text.encode_fixed(missing, L)
        for i, p in enumerate(missing):
            self._memo[p] = TextBatch(*(t[i : i + 1].clone() for t in (tb.states, tb.mask, tb.pooled)))

    def initial_noise(self, seeds: list[int], variations=None) -> torch.Tensor:
        """(B, C, S, S) standard normal latents, row b drawn from its own generator seeded by
        seeds[b]; variations: None, or per row None / (variation seed, strength), which mixes in
        that seed's noise by slerp (sampling/noise.py)."""
        c, s = self.dit.cfg.latent_channels, self.dit.cfg.latent_size

        def draw(sds):
            return torch.stack([torch.randn((c, s, s), generator=torch.Generator().manual_seed(sd)) for sd in sds])

        noise = draw(seeds)  # (B, C, S, S), one generator per sample
        if variations is not None:
            noise = vary_gaussian(noise, variations, draw)
        return noise.to(self.device)

    @torch.inference_mode()
    def _sample(self, requests: list[Request], settings: DiffusionSettings, callback=None) -> SampleResult:
        t0 = time.perf_counter()
        cond, uncond = self.encode_prompts([styled(r.prompt, settings.style) for r in requests],
                                           settings.negative_prompt)
        t1 = time.perf_counter()
        calls = [0]

        def net(*args):
            calls[0] += 1
            return self.net(*args)

        model_fn = cfg_wrap(net, cond, uncond, settings.guidance, settings.guidance_interval)
        ts = flow_schedule(settings.steps, self.shift)
        cb = None
        if callback is not None:
            def cb(i, n, x, x0):
                callback(i + 1, n, self._preview(x0))
        x1 = self.initial_noise([r.seed for r in requests], [r.variation for r in requests])
        z = SAMPLERS[settings.sampler](model_fn, x1, ts, cb)
        t2 = time.perf_counter()
        px = to_uint8(self.ae.decode(z)).cpu()  # (B, 3, H, W)
        t3 = time.perf_counter()
        images = [Image.fromarray(p.permute(1, 2, 0).numpy()) for p in px]
        return SampleResult(images, {"text": t1 - t0, "sample": t2 - t1, "decode": t3 - t2},
                            [calls[0]] * len(requests))

    def _preview(self, x0_latent: torch.Tensor) -> torch.Tensor:
        """A cheap preview: the first three latent channels of the current data prediction,
        rescaled to [0, 1] -- no decoder call, so progress events cost nothing."""
        z = x0_latent[:, :3].float()
        lo = z.amin(dim=(1, 2, 3), keepdim=True)
        hi = z.amax(dim=(1, 2, 3), keepdim=True)
        return ((z - lo) / (hi - lo + 1e-6)).cpu()


def _interval(v) -> tuple[float, float] | None:
    """(lo, hi) from a pair or "lo,hi"; (0, 1) and None mean "guide at every step" -> None.
    UserInputError unless 0 <= lo <= hi <= 1."""
    if v is None:
        return None
    try:
        lo, hi = (float(x) for x in (v.split(",") if isinstance(v, str) else v))
    except (TypeError, ValueError):
        raise UserInputError(f"guidance_interval must be two numbers lo,hi in [0, 1], got {v!r}") from None
    if not 0.0 <= lo <= hi <= 1.0:
        raise UserInputError(f"guidance_interval must satisfy 0 <= lo <= hi <= 1, got {v!r}")
    return None if (lo, hi) == (0.0, 1.0) else (lo, hi)
