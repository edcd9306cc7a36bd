"""The autoregressive family's pipeline: text -> MiniLM -> prefix -> Llama decodes image tokens
(on its fused decode view, speed/fused_llama.py) -> FSQ tokenizer decoder -> pixels. The model
folder is described in folder.py.

Samplers: "cached" (static KV cache, batched CFG: the default), "sjd" (speculative Jacobi: same
distribution, fewer network calls per image, one sample at a time), "nocache" (the naive rung,
kept for benchmarks). `steps` has no meaning for AR decoding (one network call per token, or per
SJD pass); it is accepted, recorded, and ignored.

A model trained with objective "masked" (models/masked_t2i.py, `blinkgen train --family maskgit`)
has one sampler, "maskgit": `steps` parallel passes fill all image slots (sampling/maskgit.py).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from PIL import Image

from ...models.ar_t2i import ARTextToImage, fit_text
from ...models.masked_t2i import MaskedTextToImage
from ...checks import as_float, as_int
from ...errors import UserInputError
from ...pipeline import Pipeline, Request, SampleResult, Settings
from ...precision import dtype_of
from ...sampling.edit import composite, default_strength, edit_pixels, token_mask
from ...sampling.ar import DecodeSettings, decode, decode_no_cache, decode_one_token, draw_uniforms
from ...sampling.maskgit import DEFAULT_CHOICE_TEMPERATURE, draw_maskgit_uniforms, maskgit_decode
from ...sampling.noise import vary_uniform
from ...sampling.speculative import speculative_decode_batch
from ...speed.compile import compiled_step
from ...speed.fused_llama import fused_view
from ...text.encoder import TextBatch, shared_encoder
from .folder import DEFAULT_DECODE, DEFAULT_MASKGIT_STEPS, default_settings, load_ar_model, save_ar_folder

SAMPLERS = ("cached", "sjd", "nocache")
MASKED_SAMPLERS = ("maskgit",)


# --- token samplers (model + encoded prompts + one generator per image -> tokens) --------------
def _gens(seeds: list[int]) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(int(sd)) for sd in seeds]


@torch.inference_mode()
def sample_causal(model: ARTextToImage, text: TextBatch, generators: list[torch.Generator],
                  s: DecodeSettings, step=decode_one_token, callback=None, uncond: TextBatch | None = None,
                  variations=None) -> torch.Tensor:
    """KV-cached next-token decoding (sampling/ar.py) on the Llama's fused decode view
    (speed/fused_llama.py). text: B encoded prompts; generators: one per prompt; step:
    `decode_one_token` or `speed.compile.compiled_step()`; uncond: B encoded negative prompts
    for guidance (None: the learned null condition); variations: per row None or (variation
    seed, strength) (sampling/noise.py). -> tokens (B, N) long."""
    pre, pre_mask = model.conditioning(text, s.cfg, uncond)
    N = model.cfg.n_tokens
    u = draw_uniforms(generators, N)  # (B, N)
    if variations is not None:
        u = vary_uniform(u, variations, lambda sds: draw_uniforms(_gens(sds), N))
    return decode(fused_view(model.llama), pre, pre_mask, u, s, step, callback)


@torch.inference_mode()
def sample_masked(model: MaskedTextToImage, text: TextBatch, generators: list[torch.Generator],
                  s: DecodeSettings, steps: int = DEFAULT_MASKGIT_STEPS, choice_temperature: float | None = None,
                  callback=None, uncond: TextBatch | None = None, variations=None) -> torch.Tensor:
    """The masked mode's parallel decoding in `steps` passes (sampling/maskgit.py) on the fused
    decode view; the causal decode would be meaningless for this network. uncond, variations: as
    for `sample_causal`. -> tokens (B, N) long."""
    pre, pre_mask = model.conditioning(text, s.cfg, uncond)
    N = model.cfg.n_tokens
    u = draw_maskgit_uniforms(generators, steps, N)  # (B, K, 2, N)
    if variations is not None:
        u = vary_uniform(u, variations, lambda sds: draw_maskgit_uniforms(_gens(sds), steps, N))
    ct = DEFAULT_CHOICE_TEMPERATURE if choice_temperature is None else choice_temperature
    return maskgit_decode(model, pre, pre_mask, u, s, ct, net=fused_view(model.llama), callback=callback)


# --- pipeline ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ARSettings(Settings):
    """steps: ignored by the causal samplers (recorded only), the number of parallel passes for
    "maskgit" (1 to n_tokens); guidance: CFG scale, run as one batch of [cond; null] rows.
    window: the SJD draft length (None = the model's `decode.window`); choice_temperature: the
    masked mode's Gumbel noise on which slots to keep (None = the model's). lora / lora_scale: a
    LoRA adapter fine-tuned from this model on its Llama (`blinkgen finetune`), merged into a copy
    at that scale (pipeline.py). negative_prompt:
    encoded in place of the learned null condition in the [cond; uncond] rows (no extra pass)."""

    window: int | None = None
    choice_temperature: float | None = None


class ARPipeline(Pipeline):
    family = "ar"
    samplers = SAMPLERS
    settings_type = ARSettings
    supports = frozenset({"lora", "negative_prompt", "variation"})
    lora_network = "model"

    def __init__(self, model: ARTextToImage, config: dict, name: str = "ar", device="cpu",
                 dtype: str = "fp32", compile_step: bool = False):
        self.device = torch.device(device)
        self.dtype = dtype_of(dtype)
        # The network (Llama + text projection) runs in the chosen dtype; the tokenizer decoder
        # stays fp32 (it is small and pixel-exact decoding is cheap there).
        self.model = model.eval().requires_grad_(False).to(self.device, self.dtype)
        self.model.tokenizer.float()
        self.config, self.name = config, name
        self.image_size = int(model.cfg.tokenizer.image_size)
        self.masked = model.cfg.objective == "masked"
        if self.masked:  # steps = parallel passes, at most one per image slot; edits re-mask slots
            self.samplers, self.max_steps = MASKED_SAMPLERS, model.cfg.n_tokens
            self.supports = self.supports | {"init_image", "mask", "strength"}
        d = {**default_settings(model.cfg), **config.get("defaults", {})}
        self.defaults = ARSettings(int(d["steps"]), float(d["guidance"]), str(d["sampler"]))
        dec = {**DEFAULT_DECODE, **config.get("decode", {})}
        self.window = int(dec.pop("window"))
        self.choice_temperature = float(dec.pop("choice_temperature"))
        self.decode_settings = DecodeSettings(**dec)  # guidance filled per call
        self.compile_step = compile_step  # torch.compile(fullgraph) the one-token step
        self.text = shared_encoder("cpu")
        self._memo: dict[str, TextBatch] = {}

    @classmethod
    def from_folder(cls, folder, device="cpu", dtype="fp32") -> "ARPipeline":
        model, config = load_ar_model(folder)
        pipe = cls(model, config, name=Path(folder).name, device=device, dtype=dtype)
        pipe.folder = Path(folder)
        return pipe

    @torch.no_grad()
    def round_trip(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) uint8 -> the same through the image tokenizer (FSQ tokens, decode), uint8
        on the CPU, 64 at a time (Pipeline.round_trip)."""
        m = self.model
        return torch.cat([m.tokens_to_images(m.tokenizer.encode_uint8(images[i:i + 64].to(self.device))).cpu()
                          for i in range(0, len(images), 64)])

    def save(self, path) -> Path:
        return save_ar_folder(path, self.model, {k: v for k, v in self.config.items()
                                                 if k not in ("ar", "family")})

    def _check_settings(self, settings: ARSettings) -> ARSettings:
        w, ct = settings.window, settings.choice_temperature
        if w is not None:
            w = as_int(w, "window", 1, self.model.cfg.n_tokens)
        if ct is not None:
            ct = as_float(ct, "choice_temperature", 0.0)
            if not ct < 1e3:
                raise UserInputError(f"choice_temperature must be a number in [0, 1000), got {ct!r}")
        return replace(settings, window=w, choice_temperature=ct)

    def encode_prompts(self, prompts: list[str]) -> TextBatch:
        """Each prompt encoded alone and padded to text_len: its states never depend on which
        other prompts share the batch."""
        L = self.model.cfg.text_len
        out = []
        for p in prompts:
            hit = self._memo.get(p)
            if hit is None:
                tb = self.text.encode([p])
                s, m = fit_text(tb, L)
                hit = TextBatch(s, m, tb.pooled)
                if len(self._memo) > 4096:
                    self._memo.clear()
                self._memo[p] = hit
            out.append(hit)
        return TextBatch.cat(out)

    def negative_rows(self, settings: ARSettings, B: int) -> TextBatch | None:
        """The negative prompt encoded and repeated for B rows, or None (the learned null)."""
        if settings.negative_prompt is None:
            return None
        neg = self.encode_prompts([settings.negative_prompt])
        return TextBatch(neg.states.expand(B, -1, -1), neg.mask.expand(B, -1), neg.pooled.expand(B, -1))

    @torch.inference_mode()
    def decode_tokens(self, text: TextBatch, seeds: list[int], settings: ARSettings,
                      callback=None, variations=None) -> tuple[torch.Tensor, list[int], dict]:
        """Encoded prompts (B rows) -> (tokens (B, N) long, network calls per image, stats).
        One CPU generator per seed, so an image depends on its seed alone; variations: per row
        None or (variation seed, strength) (refused by "sjd", which draws as it goes)."""
        m = self.network_for(settings)  # self.model, or its LoRA-merged copy
        s = replace(self.decode_settings, guidance=settings.guidance)
        gens = _gens(seeds)
        B, N = len(seeds), m.cfg.n_tokens
        uncond = self.negative_rows(settings, B)
        if variations is not None and all(v is None for v in variations):
            variations = None
        cb = None if callback is None else (lambda done, total: callback(done, total, None))
        if settings.sampler == "maskgit":
            ct = self.choice_temperature if settings.choice_temperature is None else settings.choice_temperature
            return sample_masked(m, text, gens, s, settings.steps, ct, cb, uncond, variations), [settings.steps] * B, {}
        if settings.sampler == "sjd":
            if variations is not None:
                raise UserInputError("the sjd sampler draws its randomness as it decodes, so it cannot mix "
                                     "a variation seed in; use the cached sampler")
            window = self.window if settings.window is None else settings.window
            pre, pm = m.conditioning(text, s.cfg, uncond)
            toks, stats = speculative_decode_batch(fused_view(m.llama), pre, pm, N, gens, s, window, cb)
            return toks, [1 + st.passes for st in stats], \
                {"tokens_per_pass": [round(st.tokens_per_pass, 3) for st in stats]}
        if settings.sampler == "nocache":
            pre, pm = m.conditioning(text, s.cfg, uncond)
            u = draw_uniforms(gens, N)
            if variations is not None:
                u = vary_uniform(u, variations, lambda sds: draw_uniforms(_gens(sds), N))
            return decode_no_cache(m.llama, pre, pm, u, s, cb), [N] * B, {}
        step = compiled_step() if self.compile_step else decode_one_token
        return sample_causal(m, text, gens, s, step, cb, uncond, variations), [N] * B, {}

    def sample_tokens(self, prompts: list[str], seeds: list[int], settings: ARSettings,
                      callback=None) -> torch.Tensor:
        """prompts and their seeds -> tokens (B, N) long (what `sample` decodes to pixels)."""
        return self.decode_tokens(self.encode_prompts(prompts), seeds, settings, callback)[0]

    def _sample(self, requests: list[Request], settings: ARSettings, callback=None) -> SampleResult:
        t0 = time.perf_counter()
        text = self.encode_prompts([r.prompt for r in requests])
        t1 = time.perf_counter()
        if any(r.edits for r in requests):
            toks, calls, init, repaint = self.edit_tokens(text, requests, settings, callback)
            stats = {}
        else:
            toks, calls, stats = self.decode_tokens(text, [r.seed for r in requests], settings, callback,
                                                    [r.variation for r in requests])
        t2 = time.perf_counter()
        px = self.model.tokens_to_images(toks).cpu().clone()  # (B, 3, H, W) uint8 (clone: a normal tensor)
        masked = [i for i, r in enumerate(requests) if r.mask is not None]
        if masked:  # pixels the mask keeps are the input's, exactly
            m = torch.tensor(masked)
            px[m] = composite(px[m], init[m], repaint[m])
        t3 = time.perf_counter()
        images = [Image.fromarray(p.permute(1, 2, 0).numpy()) for p in px]
        return SampleResult(images, {"text": t1 - t0, "sample": t2 - t1, "decode": t3 - t2}, calls, stats)

    @torch.inference_mode()
    def edit_tokens(self, text: TextBatch, requests: list[Request], settings: ARSettings,
                    callback=None) -> tuple[torch.Tensor, list[int], torch.Tensor, torch.Tensor]:
        """The masked mode's editing (after MaskGIT's inpainting): the init image is tokenised,
        a `strength` fraction of its editable tokens (all of them, or those a mask touches) is
        masked again -- which ones, by the request's seed -- and the passes refill them, the others
        kept. Passes: ceil(steps * M / N) for M re-masked of N slots (at least 1, at most M). A
        request without an init image is text-to-image (all slots masked, `steps` passes), the
        same tokens as `decode_tokens` gives it. Rows are decoded in groups of equal (M, passes).
        -> (tokens (B, N) long, network calls per image, init (B, 3, S, S) uint8, repaint mask
        (B, 1, S, S) float)."""
        m, S, N = self.model, self.image_size, self.model.cfg.n_tokens
        white, ones = torch.full((3, S, S), 255, dtype=torch.uint8), torch.ones(1, S, S)
        pairs = [edit_pixels(r.init_image, r.mask, S) if r.edits else (white, None) for r in requests]
        init = torch.stack([p for p, _ in pairs])  # (B, 3, S, S) uint8 (white without an init image)
        repaint = torch.stack([ones if m is None else m for _, m in pairs])  # (B, 1, S, S), 1 = repaint
        toks0 = m.tokenizer.encode_uint8(init.to(self.device)).cpu()  # (B, N)
        editable = token_mask(repaint, S // m.cfg.tokenizer.grid)  # (B, N) bool
        plans = []
        for r, e in zip(requests, editable):
            st = default_strength(r.strength, r.mask is not None) if r.edits else 1.0
            n_edit = int(e.sum())
            M = min(n_edit, max(1, round(st * n_edit))) if n_edit else 0
            plans.append((M, min(M, max(1, math.ceil(settings.steps * M / N))) if M else 0))
        groups: dict[tuple[int, int], list[int]] = {}
        for i, plan in enumerate(plans):
            groups.setdefault(plan, []).append(i)
        s = replace(self.decode_settings, guidance=settings.guidance)
        ct = self.choice_temperature if settings.choice_temperature is None else settings.choice_temperature
        toks, calls = toks0.clone(), [0] * len(requests)
        total, done = sum(M * len(rows) for (M, _), rows in groups.items()) or 1, 0
        for (M, K), rows in sorted(groups.items(), reverse=True):
            if M == 0:  # nothing under the mask: the input comes back
                continue
            gens = [torch.Generator().manual_seed(requests[i].seed) for i in rows]
            u = draw_maskgit_uniforms(gens, K, N)  # (b, K, 2, N): what text-to-image draws first
            pick = torch.stack([torch.rand(N, generator=g) for g in gens])  # (b, N): which to re-mask
            pick = torch.where(editable[rows], pick, torch.full_like(pick, 2.0))
            masked = pick.argsort(dim=1).argsort(dim=1) < M  # (b, N): the M lowest editable draws
            idx = torch.tensor(rows)
            pre, pre_mask = m.conditioning(text.index(idx), s.cfg)
            cb = None if callback is None else (
                lambda d, _t, off=done, b=len(rows): callback(min(off + d * b, total), total, None))
            toks[idx] = maskgit_decode(m, pre, pre_mask, u, s, ct, net=fused_view(m.llama), callback=cb,
                                       tokens=toks0[idx].to(self.device), masked=masked.to(self.device)).cpu()
            done += M * len(rows)
            for i in rows:
                calls[i] = K
        if callback is not None and done < total:
            callback(total, total, None)
        return toks, calls, init, repaint
