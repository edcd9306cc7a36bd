"""Stored expected values: how they are computed, read and written. Tests compare against the
files in tests/contract/expected/; only `scripts/refresh_expected.py --why "..."` writes them, and
it records why in the file's history.

- samplers.json: for every registered family, mode and sampler, seeded statistics of the images
  of a tiny random model (the family's `tiny()`, seed 0): per-channel mean and standard deviation
  over PROMPTS x SEEDS, on the 0-255 scale. A change in any sampler, network or decoder moves them.
- default_model.json + default_first.png: the shipped default model's first image for
  DEFAULT_PROMPT at DEFAULT_SEED with the model's default settings, keyed by the sha256 of the
  shipped weights files. A retrained default model has another hash: the test then says to run the
  refresh script, and does not compare pixels.
"""
from __future__ import annotations

import datetime
import json
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

import blinkgen
from blinkgen import families
from blinkgen.api import WEIGHTS_DIR
from blinkgen.pipeline import requests

EXPECTED = Path(__file__).resolve().parent / "expected"
SAMPLERS_FILE = EXPECTED / "samplers.json"
DEFAULT_FILE = EXPECTED / "default_model.json"
DEFAULT_PNG = EXPECTED / "default_first.png"

PROMPTS = ["a red circle", "two blue squares on a white background"]
SEEDS = [0, 1]
TINY_STEPS = 4  # steps for the tiny models (the masked mode's passes; ignored by causal samplers)
STATS_TOL = 0.5  # on the 0-255 scale: far above float noise, far below any real change
DEFAULT_PROMPT, DEFAULT_SEED = "red heart", 0
DEFAULT_MEAN_TOL, DEFAULT_MAX_TOL = 1.0, 32  # mean / max |pixel difference| allowed, 0-255
REFRESH = 'python scripts/refresh_expected.py --why "<what changed and why the new values are right>"'


def cases() -> list[tuple[str, str, str]]:
    """(family, mode, sampler) for every registered family and sampler."""
    return [(f.name, mode, s) for f in families.all_families() for mode, names in f.samplers.items() for s in names]


def seeded_image(seed: int, side: int):
    """A seeded random RGB image (side x side): the init image of a family that needs one."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8))


def requests_for(pipe, prompts, seeds) -> list:
    """Requests for `pipe`: prompt + seed, and for a family that needs an init image (an
    upscaler), a seeded random one at its input size -- so there too the request decides."""
    reqs = requests(prompts, seeds)
    if "init_image" not in pipe.requires:
        return reqs
    side = getattr(pipe, "input_size", pipe.image_size)
    return [replace(r, init_image=seeded_image(r.seed, side)) for r in reqs]


def tiny_pipeline(family: str, mode: str, root: Path):
    folder = families.get(family).make_tiny(root / f"{family}-{mode}", mode=mode)
    return blinkgen.load(str(folder))


class TinyPipelines:
    """One tiny random pipeline per (family, mode), built on first use under root."""

    def __init__(self, root: Path):
        self.root, self.cache = Path(root), {}

    def __call__(self, family: str, mode: str):
        if (family, mode) not in self.cache:
            self.cache[family, mode] = tiny_pipeline(family, mode, self.root)
        return self.cache[family, mode]


def image_stats(images) -> dict:
    """Per-channel mean and std over all images, 0-255 scale."""
    a = np.stack([np.asarray(im, dtype=np.float64) for im in images])  # (N, H, W, 3)
    return {"mean": a.mean(axis=(0, 1, 2)).round(3).tolist(), "std": a.std(axis=(0, 1, 2)).round(3).tolist()}


def sampler_stats(pipe, sampler: str) -> dict:
    settings = pipe.settings(steps=min(TINY_STEPS, pipe.max_steps), sampler=sampler)
    res = pipe.sample(requests_for(pipe, [p for p in PROMPTS for _ in SEEDS], SEEDS * len(PROMPTS)), settings)
    return image_stats(res.images)


def compute_sampler_stats() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        pipes = TinyPipelines(Path(tmp))
        return {f"{fam}/{mode}/{sampler}": sampler_stats(pipes(fam, mode), sampler) for fam, mode, sampler in cases()}


def weights_sha256(folder: Path = WEIGHTS_DIR / "default") -> str:
    """sha256 over the model folder's *.safetensors files (relative path + bytes), sorted: the
    `model_hash` every PNG records (modelio.weights_hash)."""
    from blinkgen.modelio import weights_hash

    return weights_hash(folder)


def default_first_image():
    pipe = blinkgen.load("default")
    return pipe.generate(DEFAULT_PROMPT, n=1, seed=DEFAULT_SEED)[0], pipe.defaults.to_dict()


def read(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def write(path: Path, values: dict, why: str, **extra) -> None:
    """Write values with the reason, keeping the history of earlier refreshes."""
    old = read(path)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%MZ")
    history = old.get("history", []) + [{"when": stamp, "why": why}]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"refreshed_by": REFRESH, **extra, "values": values, "history": history},
                               indent=1, sort_keys=True) + "\n")
