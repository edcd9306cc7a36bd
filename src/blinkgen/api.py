"""The front door: `blinkgen.load(name_or_path) -> Generator`.

Every family (diffusion now; autoregressive, GAN, VAE later) implements the same small
interface, so the CLI, the server, the evaluator and the benchmarks never special-case a family.
An image is a function of (model, prompt, seed, settings) only: `sample` draws each image's
starting noise from its own generator seeded by its own seed, so batch-mates never matter.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from PIL import Image

from .errors import ModelLoadError, UserInputError

log = logging.getLogger(__name__)

WEIGHTS_DIR = Path(__file__).parent / "weights"
MAX_N = 256  # images per call; the server has its own, lower bound
MAX_PROMPT_CHARS = 2000
SEED_MAX = 2**63 - 1

# callback(step, total, preview) -> None; preview: (B, 3, h, w) float in [0, 1] or None.
# Raising inside the callback aborts the batch (the server uses that for cancel and timeouts).
ProgressCallback = Callable[[int, int, object], None] | None


@dataclass(frozen=True)
class SampleSettings:
    steps: int
    guidance: float
    sampler: str

    def to_dict(self) -> dict:
        return asdict(self)


class Generator:
    """Base class. Subclasses set name, family, image_size, defaults, samplers, max_steps and
    implement `_sample`."""

    name: str
    family: str
    image_size: int
    defaults: SampleSettings
    samplers: tuple[str, ...]
    max_steps: int = 500
    max_guidance: float = 30.0

    @property
    def sizes(self) -> list[str]:
        return [f"{self.image_size}x{self.image_size}"]

    def settings(self, steps=None, guidance=None, sampler=None) -> SampleSettings:
        """Fill in defaults and validate; every error names the argument and its allowed range."""
        d = self.defaults
        steps = d.steps if steps is None else steps
        guidance = d.guidance if guidance is None else guidance
        sampler = d.sampler if sampler is None else sampler
        if isinstance(steps, bool) or not isinstance(steps, int):
            raise UserInputError(f"steps must be an integer, got {steps!r}")
        if not 1 <= steps <= self.max_steps:
            raise UserInputError(f"steps must be between 1 and {self.max_steps}, got {steps}")
        if isinstance(guidance, bool) or not isinstance(guidance, (int, float)) or guidance != guidance:
            raise UserInputError(f"guidance must be a number, got {guidance!r}")
        if not 0.0 <= guidance <= self.max_guidance:
            raise UserInputError(f"guidance must be between 0 and {self.max_guidance}, got {guidance}")
        if sampler not in self.samplers:
            raise UserInputError(f"unknown sampler {sampler!r}; choose one of {', '.join(self.samplers)}")
        return SampleSettings(steps=steps, guidance=float(guidance), sampler=sampler)

    def sample(self, prompts: list[str], seeds: list[int], settings: SampleSettings,
               callback: ProgressCallback = None) -> list[Image.Image]:
        if len(prompts) != len(seeds):
            raise UserInputError("prompts and seeds must have the same length")
        for p in prompts:
            if not isinstance(p, str) or not p.strip():
                raise UserInputError("prompt must be a non-empty string")
            if len(p) > MAX_PROMPT_CHARS:
                raise UserInputError(f"prompt is {len(p)} characters; the limit is {MAX_PROMPT_CHARS}")
        for s in seeds:
            if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s <= SEED_MAX:
                raise UserInputError(f"seed must be an integer in [0, 2^63), got {s!r}")
        if not prompts:
            return []
        return self._sample(list(prompts), list(seeds), settings, callback)

    def generate(self, prompt: str | list[str], n: int = 1, seed: int | None = None, steps=None,
                 guidance=None, sampler=None, callback: ProgressCallback = None) -> list[Image.Image]:
        """n images of one prompt (or one image per prompt in a list), seeds seed, seed+1, ..."""
        prompts = [prompt] * n if isinstance(prompt, str) else list(prompt)
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_N:
            raise UserInputError(f"n must be between 1 and {MAX_N}, got {n!r}")
        if seed is None:
            seed = 0
        settings = self.settings(steps, guidance, sampler)
        return self.sample(prompts, [seed + i for i in range(len(prompts))], settings, callback)

    def png_parameters(self, prompt: str, seed: int, settings: SampleSettings) -> dict:
        return {"prompt": prompt, "seed": seed, **settings.to_dict(), "model": self.name}

    def _sample(self, prompts, seeds, settings, callback):  # pragma: no cover - abstract
        raise NotImplementedError


def resolve(name_or_path: str) -> Path:
    """An embedded model name ("default", ...) or a folder path."""
    p = Path(name_or_path).expanduser()
    if p.is_dir():
        return p
    embedded = WEIGHTS_DIR / name_or_path
    if "/" not in name_or_path and embedded.is_dir():
        return embedded
    names = sorted(d.name for d in WEIGHTS_DIR.iterdir() if (d / "config.json").is_file()) if WEIGHTS_DIR.is_dir() else []
    raise ModelLoadError(f"no model named {name_or_path!r}: not a folder, and the embedded models are {names or 'none'}")


def embedded_models() -> list[str]:
    """The embedded generators (folders under weights/ whose config names a generator family);
    the contrastive evaluator lives there too but generates nothing, so it is not listed."""
    if not WEIGHTS_DIR.is_dir():
        return []
    import json

    families = set(_family_loaders())
    out = []
    for d in WEIGHTS_DIR.iterdir():
        try:
            if json.loads((d / "config.json").read_text()).get("family") in families:
                out.append(d.name)
        except (OSError, ValueError):
            continue
    return sorted(out)


def load(name_or_path: str = "default", device: str = "cpu", dtype: str = "fp32") -> Generator:
    from .modelio import read_config

    folder = resolve(name_or_path)
    cfg = read_config(folder)
    family = cfg.get("family")
    loaders = _family_loaders()
    if family not in loaders:
        raise ModelLoadError(f"{folder}/config.json names family {family!r}; known: {sorted(loaders)}")
    gen = loaders[family](folder, device=device, dtype=dtype)
    if (folder.parent == WEIGHTS_DIR):
        gen.name = folder.name
    return gen


def _family_loaders() -> dict[str, Callable]:
    from .diffusion import DiffusionGenerator

    loaders: dict[str, Callable] = {"diffusion": DiffusionGenerator.from_folder}
    try:  # the autoregressive family registers itself when present
        from .ar_family import ARGenerator

        loaders["ar"] = ARGenerator.from_folder
    except ImportError:
        pass
    return loaders
