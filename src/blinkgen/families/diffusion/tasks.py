"""The diffusion family's training tasks (the protocol: train/task.py): the KL autoencoder, then
flow matching of the DiT over its cached latents."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
import torch.nn.functional as F

from ...data.types import ImageCaptionSet
from ...errors import ModelLoadError, UserInputError
from ...modelio import load_into, read_config, read_tensors, state_dict_for_save, weights_hash, write_folder_atomic
from ...models.autoencoder import AE_PRESETS, AutoencoderKL, measure_latent_scale, psnr, to_pixels, to_uint8
from ...models.denoisers import PRESETS as DENOISER_PRESETS
from ...models.denoisers import arch_of, config_dict, full_config
from ...models.denoisers import from_preset as denoiser_from_preset
from ...pipeline import requests
from ...pngmeta import grid
from ...precision import dtype_of
from ...sampling.flow import draw_timesteps, interpolate, multiscale_mse, velocity_target
from ...train.captions import CaptionTable, encode_captions, styled
from ...train.config import TrainConfig
from ...train.task import Task
from .folder import DEFAULT_SETTINGS, NULL_PROMPT, find_autoencoder, load_autoencoder, save_diffusion_folder, trained_keys
from .pipeline import DiffusionPipeline

log = logging.getLogger(__name__)


class AutoencoderTask(Task):
    """Trains the KL autoencoder that maps pixels to the diffusion model's latents."""

    def __init__(self, cfg: TrainConfig, train: ImageCaptionSet, val: ImageCaptionSet, device):
        if cfg.preset not in AE_PRESETS:
            raise ModelLoadError(f"unknown autoencoder preset {cfg.preset!r}; choose from {sorted(AE_PRESETS)}")
        self.cfg, self.device = cfg, device
        self.model = AutoencoderKL(AE_PRESETS[cfg.preset])
        self.images = train.images.to(device)  # (N, 3, H, W) uint8
        self.val_images = val.images.to(device)
        self.n_train = len(train)
        f = self.model.cfg.downsample
        self.latent_shape = (self.model.cfg.latent_channels, cfg.size // f, cfg.size // f)

    def draw(self, g: torch.Generator, B: int) -> dict:
        return {"noise": torch.randn((B, *self.latent_shape), generator=g)}

    def loss(self, model, idx, rnd):
        x = to_pixels(self.images[idx])
        return model(x, rnd["noise"].to(self.device))

    @torch.no_grad()
    def validate(self, ema) -> dict:
        rec = torch.cat([to_uint8(ema.decode(ema.encode(to_pixels(self.val_images[i:i + 128]))))
                         for i in range(0, len(self.val_images), 128)])
        return {"val_psnr": psnr(rec.cpu(), self.val_images.cpu()), "val_loss": -psnr(rec.cpu(), self.val_images.cpu())}

    @torch.no_grad()
    def samples(self, ema, step):
        from PIL import Image
        x = self.val_images[:16]
        rec = to_uint8(ema.decode(ema.encode(to_pixels(x))))
        ims = [Image.fromarray(t.permute(1, 2, 0).cpu().numpy()) for pair in zip(x, rec) for t in pair]
        return grid(ims, cols=8)

    def export(self, ema, folder: Path, extra: dict) -> Path:
        ema.cfg.latent_scale = measure_latent_scale(ema, self.images)
        log.info("autoencoder latent scale: %.4f", ema.cfg.latent_scale)
        return write_folder_atomic(folder, {"config.json": {"family": "autoencoder", **ema.cfg.to_dict(), **extra},
                                            "model.safetensors": state_dict_for_save(ema, dtype_of(self.cfg.save_dtype))})


class DiffusionTask(Task):
    """Flow matching (rectified flow) of a DiT over cached latents with caption dropout."""

    cpu_sdpa_backend = "math"  # the denoisers train 1.14-1.43x faster with it on a CPU (train/config.py)

    def __init__(self, cfg: TrainConfig, train: ImageCaptionSet, val: ImageCaptionSet, device):
        self.cfg, self.device = cfg, device
        self.ae = load_autoencoder(find_autoencoder(cfg.autoencoder), device)
        self.model = self._build_model(cfg)
        self._prepare(train, val)

    def _prepare(self, train: ImageCaptionSet, val: ImageCaptionSet) -> None:
        """Latents of both sets (self.ae), the caption table and its encodings."""
        cfg, device = self.cfg, self.device
        self.latents = self._encode(train.images)  # (N, C, S, S) unit-std latents
        self.val_latents = self._encode(val.images)
        self.n_train = len(train)
        # caption table: every caption (plain and styled) once; per image, ids of its captions
        val_styles = val.style_list()
        self.val_prompts = [styled(c[0], s) if cfg.style_prob > 0 else c[0] for c, s in zip(val.captions, val_styles)]
        self.captions = CaptionTable(train.captions, train.styles, [NULL_PROMPT, *self.val_prompts]).to(device)
        self.null_id = self.captions.pos[NULL_PROMPT]
        tb = encode_captions(self.captions.strings, device, self.text_layers())
        self.states = tb.states.to(device, torch.float16)  # (U, L, 384)
        self.mask = tb.mask.to(device)
        self.pooled = tb.pooled.to(device)
        self.val_cap = torch.tensor([self.captions.pos[c] for c in self.val_prompts], device=device)

    def text_layers(self) -> int:
        """MiniLM layers the denoiser reads: the run's --text-layers (a fine-tune or distillation
        takes its base's from the folder's config)."""
        return self.cfg.text_layers

    def _build_model(self, cfg: TrainConfig) -> torch.nn.Module:
        """The denoiser this task trains: a fresh one of `cfg.preset` (the distill task starts
        from a trained one instead)."""
        if cfg.preset not in DENOISER_PRESETS:
            raise ModelLoadError(f"unknown denoiser preset {cfg.preset!r}; choose from {sorted(DENOISER_PRESETS)}")
        f = self.ae.cfg.downsample
        return denoiser_from_preset(cfg.preset, self.ae.cfg.latent_channels, cfg.size // f)

    def warm_start(self, folder: Path) -> None:
        """--init-from (train/warm_start.py): the denoiser of a trained diffusion folder, which must
        be the network --preset and --size build (not a distilled student: it has a step-size
        input) and share this run's autoencoder weights. UserInputError otherwise."""
        config = read_config(folder)  # family and "distilled" were checked before the data (warm_start.precheck)
        where = f"--init-from {folder}"
        mine = json.loads(json.dumps({"arch": arch_of(self.model), **config_dict(self.model)}))
        arch = config.get("arch", "dit")
        theirs = json.loads(json.dumps({"arch": arch, **full_config(arch, config.get("dit") or {})}))
        diff = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
        if diff:
            shown = ", ".join(f"{k}: {theirs.get(k)!r} there, {mine.get(k)!r} here" for k in diff[:4])
            raise UserInputError(f"{where} is another network than --preset {self.cfg.preset} at --size "
                                 f"{self.cfg.size} builds ({shown}); pass the preset and size it was trained with")
        if weights_hash(folder / "autoencoder") != weights_hash(find_autoencoder(self.cfg.autoencoder)):
            raise UserInputError(f"{where} learnt another autoencoder's latent space than --autoencoder "
                                 f"{self.cfg.autoencoder}; leave --autoencoder out to use the folder's own")
        load_into(self.model, read_tensors(folder / "model.safetensors"), str(folder))

    @torch.no_grad()
    def _encode(self, images):
        return torch.cat([self.ae.encode(to_pixels(images[i:i + 256].to(self.device))).float()
                          for i in range(0, len(images), 256)])

    def draw(self, g: torch.Generator, B: int) -> dict:
        C, S = self.latents.shape[1], self.latents.shape[2]
        return {"u": torch.rand((B,), generator=g), "drop": torch.rand((B,), generator=g),
                "t": draw_timesteps(g, B, self.cfg.t_shift, self.cfg.t_high_share, self.cfg.t_high_from),
                "noise": torch.randn((B, C, S, S), generator=g),
                "u_style": torch.rand((B,), generator=g), "u_pick": torch.rand((B,), generator=g)}

    def text(self, cid):
        return self.states[cid].float(), self.mask[cid], self.pooled[cid]

    def loss(self, model, idx, rnd):
        dev = self.device
        x0 = self.latents[idx]  # (b, C, S, S)
        cid = self.captions.draw(idx, rnd["u"].to(dev), rnd["u_style"].to(dev), rnd["u_pick"].to(dev),
                                 self.cfg.style_prob)
        cid = torch.where(rnd["drop"].to(dev) < self.cfg.caption_dropout, torch.full_like(cid, self.null_id), cid)
        t = rnd["t"].to(dev)
        noise = rnd["noise"].to(dev)
        v = model(interpolate(x0, noise, t), t, *self.text(cid))
        loss = multiscale_mse(v, velocity_target(x0, noise), self.cfg.multiscale_loss)
        return loss, {}

    val_repeats = 1  # noise/t draws per held-out image (a few-image fine-tune needs more than one)

    @torch.no_grad()
    def validate(self, ema) -> dict:
        g = torch.Generator().manual_seed(1234)  # fixed noise and t grid: a deterministic number
        x0 = self.val_latents.repeat(self.val_repeats, 1, 1, 1)  # (n, C, S, S)
        cap = self.val_cap.repeat(self.val_repeats)
        n = len(x0)
        t = torch.linspace(0.05, 0.95, 8).repeat(n // 8 + 1)[:n].to(self.device)
        noise = torch.randn(x0.shape, generator=g).to(self.device)
        xt = interpolate(x0, noise, t)
        v = torch.cat([ema(xt[i:i + 256], t[i:i + 256], *self.text(cap[i:i + 256])) for i in range(0, n, 256)])
        return {"val_loss": F.mse_loss(v.float(), velocity_target(x0, noise)).item()}

    def pipeline(self, ema) -> DiffusionPipeline:
        return DiffusionPipeline(ema, self.ae, {"image_size": self.cfg.size, **trained_keys(self.cfg.t_shift, self.text_layers())},
                                 device=self.device)

    @torch.no_grad()
    def samples(self, ema, step):
        prompts = (self.cfg.sample_prompts or self.val_prompts)[:16]
        pipe = self.pipeline(ema)
        ims = pipe.sample(requests(prompts, list(range(len(prompts)))),
                          pipe.settings(steps=20, guidance=3.0, sampler="dpmpp2m")).images
        ema.train(False)
        return grid(ims, cols=8)

    def export(self, ema, folder: Path, extra: dict) -> Path:
        styles = self.captions.styles if self.cfg.style_prob > 0 else []
        if styles:  # trained with style phrases: record them, and ask for one drawing by default
            default = "twemoji" if "twemoji" in styles else styles[0]
            extra = {"styles": styles, "defaults": {**DEFAULT_SETTINGS, "style": default}, **extra}
        extra = {**trained_keys(self.cfg.t_shift, self.text_layers()), **extra}  # sample as it trained
        return save_diffusion_folder(folder, ema, self.ae, extra, dtype=dtype_of(self.cfg.save_dtype))
