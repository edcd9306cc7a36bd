"""The diffusion family's pipeline: text -> MiniLM -> DiT velocity field -> ODE solver over
latents -> autoencoder decoder -> pixels. The model folder is described in folder.py.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from ...batch_invariance import stabilise
from ...errors import UserInputError
from ...models.autoencoder import AutoencoderKL, to_pixels, to_uint8
from ...models.denoisers import has_step_size_input
from ...models.dit import DiT
from ...pipeline import Pipeline, Request, SampleResult, Settings
from ...precision import dtype_of
from ...sampling.edit import (composite, cut_schedule, default_strength, edit_pixels, inpaint_wrap, latent_mask,
                              start_point)
from ...sampling.flow import SAMPLERS, STOCHASTIC, flow_schedule, step_size_lookup
from ...sampling.guidance import cfg_wrap
from ...sampling.noise import vary_gaussian
from ...speed.step_cache import step_cache
from ...text.encoder import DEFAULT_MAX_TOKENS, TEXT_LAYERS, PromptMemo, TextBatch, shared_encoder
from ...text.style import styled
from .folder import DEFAULT_SETTINGS, NULL_PROMPT, load_diffusion_folder, save_diffusion_folder

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DiffusionSettings(Settings):
    """steps: ODE solver steps (network evaluations: `sampling.flow.nfe`); guidance: CFG scale,
    run as one batched pass of [cond; uncond]; sampler: euler | heun | dpmpp2m | euler_a (the
    stochastic one: fresh noise each step, from the image's own seed); style: a style phrase
    appended to every prompt as "<prompt> in <style> style" (text/style.py) -- the model folder's
    `defaults.style` when not given, "none" for none; a model that lists `styles` in its config
    accepts only those. guidance_interval (lo, hi) in [0, 1]: apply guidance only for
    lo <= t <= hi (sampling/guidance.py), the model's default when not given; (0, 1) = always.
    negative_prompt: the unconditional branch of guidance encodes it instead of the null prompt
    (same single batched pass; no effect at guidance 1).
    lora / lora_scale: a LoRA adapter fine-tuned from this model (`blinkgen finetune`), merged
    into a copy of the denoiser at that scale (pipeline.py).
    cache: step caching of the DiT's deep blocks, "deep:N" = a full pass every N network calls
    (speed/step_cache.py); None = every pass full."""

    guidance_interval: tuple[float, float] | None = None


@dataclass
class EditInputs:
    """A batch's editing inputs at image_size. init: (B, 3, S, S) uint8 (white for rows without an
    init image); repaint: (B, 1, S, S) float pixel repaint mask (1 = repaint; all ones without a
    mask); z: (B, C, s, s) the init images' scaled latents; latent_repaint: (B, 1, s, s);
    masked: the rows that have a mask."""

    init: torch.Tensor
    repaint: torch.Tensor
    z: torch.Tensor
    latent_repaint: torch.Tensor
    masked: list[int]


class DiffusionPipeline(Pipeline):
    family = "diffusion"
    samplers = tuple(SAMPLERS)
    settings_type = DiffusionSettings
    supports = frozenset({"style", "init_image", "mask", "strength", "lora", "cache", "negative_prompt", "variation"})
    lora_network = "dit"

    # prompt encodings kept: each is 32 x 384 fp32 states (~49 KB), so 512 cap the memo at ~25 MB
    MEMO_MAX = 512

    def __init__(self, dit: DiT, ae: AutoencoderKL, config: dict, name: str = "diffusion",
                 device="cpu", dtype: str = "fp32"):
        # stabilise: small Linear/Conv2d batches padded so an image never depends on its
        # batch-mates (MKL/oneDNN round M <= 3 rows and batch 1 differently; batch_invariance.py)
        self.dit = stabilise(dit.eval().requires_grad_(False))
        self.ae = stabilise(ae.eval().requires_grad_(False))
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
        self.text = shared_encoder("cpu", int(config.get("text_layers", TEXT_LAYERS)))
        self.memo = PromptMemo(self.text, int(config.get("text_max_tokens", DEFAULT_MAX_TOKENS)), self.MEMO_MAX)

    def settings(self, steps=None, guidance=None, sampler=None, **extra) -> DiffusionSettings:
        """As `Pipeline.settings` (which fills and checks the style); guidance_interval None (or
        absent) = the model's default."""
        gi = extra.get("guidance_interval")
        extra["guidance_interval"] = self.defaults.guidance_interval if gi is None else _interval(gi)
        return super().settings(steps, guidance, sampler, **extra)

    def _check_settings(self, settings: DiffusionSettings) -> None:
        if settings.cache is not None:
            step_cache(self.dit, settings.cache)  # UserInputError for a bad spec or a network without blocks
        folded = (self.config.get("distilled") or {}).get("guidance")
        if folded and settings.guidance > 1 and not getattr(self, "_warned_guidance", False):
            self._warned_guidance = True  # once per pipeline: a server would repeat it per request
            log.warning("this model was distilled with guidance %s folded into the network; guidance %s on "
                        "top over-drives it (blobs on black); its default is 1", folded, settings.guidance)

    @classmethod
    def from_folder(cls, folder, device="cpu", dtype="fp32") -> "DiffusionPipeline":
        dit, ae, config = load_diffusion_folder(folder)
        pipe = cls(dit, ae, config, name=Path(folder).name, device=device, dtype=dtype)
        pipe.folder = Path(folder)
        return pipe

    @torch.no_grad()
    def round_trip(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) uint8 -> the same through the autoencoder (posterior mean, decode), uint8 on
        the CPU, 64 at a time (Pipeline.round_trip)."""
        out = []
        for i in range(0, len(images), 64):
            z = self.ae.encode(to_pixels(images[i:i + 64].to(self.device)))  # as the edit path encodes
            out.append(to_uint8(self.ae.decode(z)).cpu())
        return torch.cat(out)

    def save(self, path) -> Path:
        return save_diffusion_folder(path, self.dit, self.ae, {k: v for k, v in self.config.items()
                                                               if k not in ("dit", "family")})

    def net(self, x, t, states, mask, pooled, d=None, module=None):
        """The network call with the precision policy: DiT in self.dtype, output in fp32.
        x (B, C, S, S), t (B,), states (B, L, 384), mask (B, L) bool, pooled (B, 384), d (B,) the
        shortcut step size (step-size-conditioned models only; None = a plain call); module: a
        speed device with the denoiser's interface to call instead of self.dit (a StepCache)
        -> v (B, C, S, S)."""
        dt = self.dtype
        extra = {} if d is None else {"d": d.to(dt)}
        v = (self.dit if module is None else module)(x.to(dt), t.to(dt), states.to(self.device, dt), mask.to(self.device),
                     pooled.to(self.device, dt), **extra)
        return v.float()

    def step_sizes(self, settings: "DiffusionSettings", ts: torch.Tensor):
        """t (B,) -> d (B,) for a step-size-conditioned (shortcut) model, None for a plain one.
        Euler and Euler ancestral take jumps of the schedule's step size (d = ts[i] - ts[i+1]; 1/K
        on K uniform steps, as the shortcut model was distilled for; for euler_a, measured on the
        default model's shapes prompts: 0.352 against 0.315 at d = 0); the other solvers assume
        an instantaneous velocity, so they get d = 0 (the distilled flow field, guidance folded in)."""
        if not has_step_size_input(self.dit):
            return None
        if settings.sampler in ("euler", "euler_a"):
            return step_size_lookup(ts)
        return torch.zeros_like

    def encode_prompts(self, prompts: list[str], negative_prompt: str | None = None) -> tuple[TextBatch, TextBatch]:
        """-> (cond, uncond), each B rows of (L, 384) states; uncond is the model's null prompt,
        or `negative_prompt` when given (the negative prompt takes the null prompt's place in
        guidance: after the Stable Diffusion web UIs' negative prompts). Prompts are encoded
        padded to the fixed context length, so a prompt's states never depend on which other
        prompts share the batch (and shapes stay static); the prompts not yet memoised are
        encoded together in one batched pass."""
        null_prompt = self.config.get("null_prompt", NULL_PROMPT) if negative_prompt is None else negative_prompt
        rows = self.memo(list(prompts) + [null_prompt])
        B = len(prompts)
        cond = TextBatch(rows.states[:B], rows.mask[:B], rows.pooled[:B])
        null = TextBatch(rows.states[B:], rows.mask[B:], rows.pooled[B:])
        uncond = TextBatch(null.states.expand(B, -1, -1), null.mask.expand(B, -1), null.pooled.expand(B, -1))
        return cond.to(self.device), uncond.to(self.device)

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

    def step_noise(self, seeds: list[int], n: int, variations=None) -> torch.Tensor:
        """(n, B, C, S, S) standard normal: a stochastic sampler's fresh draw for each step.
        Row b continues the generator of seeds[b] after its initial noise (`initial_noise`), so
        an image stays a function of its own seed and settings, whatever its batch; a variation
        slerps the row's whole stream toward its variation seed's, as it does the initial noise
        (strength 1 is that seed's image exactly)."""
        c, s = self.dit.cfg.latent_channels, self.dit.cfg.latent_size

        def draw(sds):  # (B, n, C, S, S): each seed's draws after its initial noise
            rows = []
            for sd in sds:
                g = torch.Generator().manual_seed(sd)
                torch.randn((c, s, s), generator=g)  # the initial noise's draw
                rows.append(torch.randn((n, c, s, s), generator=g))
            return torch.stack(rows)

        streams = draw(seeds)
        if variations is not None:
            streams = vary_gaussian(streams, variations, draw)
        return streams.transpose(0, 1).to(self.device)  # (n, B, C, S, S)

    @torch.inference_mode()
    def _sample(self, requests: list[Request], settings: DiffusionSettings, callback=None) -> SampleResult:
        """Text-to-image, img2img (SDEdit) and inpainting in one call (sampling/edit.py): a
        request with an init_image starts at t = its strength on the path from the image's
        latents to its seed's noise and solves over the cut schedule; with a mask, the known
        region is held on the input's path every step and the final image is composited in
        pixel space (pixels the mask keeps are the input's, exactly). Requests are solved in
        groups of equal starting time; each row stays a function of its own request."""
        t0 = time.perf_counter()
        cond, uncond = self.encode_prompts([styled(r.prompt, settings.style, self.styles) for r in requests],
                                           settings.negative_prompt)
        t1 = time.perf_counter()
        B = len(requests)
        noise = self.initial_noise([r.seed for r in requests], [r.variation for r in requests])  # (B, C, S, S)
        steps_noise = (self.step_noise([r.seed for r in requests], settings.steps, [r.variation for r in requests])
                       if settings.sampler in STOCHASTIC else None)  # (steps, B, C, S, S)
        ed = self._edit_inputs(requests) if any(r.edits for r in requests) else None
        dit = self.network_for(settings)  # self.dit, or its LoRA-merged copy
        t2 = time.perf_counter()
        ts_full = flow_schedule(settings.steps, self.shift)
        groups: dict[float, list[int]] = {}
        for i, r in enumerate(requests):
            t_start = default_strength(r.strength, r.mask is not None) if r.edits else 1.0
            groups.setdefault(t_start, []).append(i)
        cuts = {t: cut_schedule(ts_full, t) for t in groups}
        total, done = sum(len(c) - 1 for c in cuts.values()), 0
        z = torch.empty_like(noise)
        calls, caches = [0] * B, []
        preview = torch.zeros(B, 3, *noise.shape[2:]) if callback is not None else None
        for t_start in sorted(groups, reverse=True):
            rows = groups[t_start]
            idx = torch.tensor(rows, device=self.device)
            count = [0]
            d_of = self.step_sizes(settings, cuts[t_start])  # shortcut models: the step each call starts
            cache = step_cache(dit, settings.cache) if settings.cache else None  # fresh per solve
            caches.append(cache)

            def net(x, t, *text, d_of=d_of, module=cache or dit):
                count[0] += 1
                return self.net(x, t, *text, d=None if d_of is None else d_of(t), module=module)

            model_fn = cfg_wrap(net, cond.index(idx), uncond.index(idx), settings.guidance, settings.guidance_interval)
            x = noise[idx]
            if ed is not None:
                x = start_point(ed.z[idx], x, t_start)
                if any(requests[i].mask is not None for i in rows):
                    model_fn = inpaint_wrap(model_fn, ed.z[idx], ed.latent_repaint[idx])
            cb = None
            if callback is not None:
                def cb(i, n, x, x0, rows=rows, offset=done):
                    preview[rows] = self._preview(x0)
                    callback(offset + i + 1, total, preview)
            extra = {} if steps_noise is None else {"noise": steps_noise[:, idx]}
            z[idx] = SAMPLERS[settings.sampler](model_fn, x, cuts[t_start], cb, **extra)
            done += len(cuts[t_start]) - 1
            for i in rows:
                calls[i] = count[0]
        t3 = time.perf_counter()
        px = to_uint8(self.ae.decode(z)).cpu()  # (B, 3, H, W)
        if ed is not None and ed.masked:
            m = torch.tensor(ed.masked)
            px[m] = composite(px[m], ed.init[m], ed.repaint[m])
        t4 = time.perf_counter()
        images = [Image.fromarray(p.permute(1, 2, 0).numpy()) for p in px]
        timings = {"text": t1 - t0, "sample": t3 - t2, "decode": t4 - t3}
        if ed is not None:
            timings["encode"] = t2 - t1
        stats = {}
        if settings.cache:
            full = sum(c.full_calls for c in caches)
            stats = {"full_passes": full, "cached_passes": sum(c.calls for c in caches) - full}
        return SampleResult(images, timings, calls, stats)

    def _edit_inputs(self, requests: list[Request]) -> "EditInputs":
        """The requests' init images and masks at image_size, and the images' latents."""
        S, f = self.image_size, self.ae.cfg.downsample
        white, ones = torch.full((3, S, S), 255, dtype=torch.uint8), torch.ones(1, S, S)
        pairs = [edit_pixels(r.init_image, r.mask, S) if r.edits else (white, None) for r in requests]
        init = torch.stack([p for p, _ in pairs])  # (B, 3, S, S) uint8 (white without an init image)
        repaint = torch.stack([ones if m is None else m for _, m in pairs])  # (B, 1, S, S), 1 = repaint
        z = self.ae.encode(to_pixels(init.to(self.device))).float()  # (B, C, S/f, S/f) scaled latents
        return EditInputs(init, repaint, z, latent_mask(repaint, f).to(self.device),
                          [i for i, r in enumerate(requests) if r.mask is not None])

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
