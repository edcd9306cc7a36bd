"""The pipeline contract: what every generator family implements, and all that the CLI, the
server, the evaluator and the benchmarks call. `blinkgen.load(name_or_path)` returns a `Pipeline`.

    pipe = blinkgen.load("default")
    settings = pipe.settings(steps=12, guidance=3.0, sampler="dpmpp2m")     # validated, frozen
    result = pipe.sample([Request("red heart", seed=1), Request("a blue square", seed=2)], settings)
    result.images        # list of PIL RGB images, image_size x image_size, one per request
    result.timings       # seconds per stage: "text", "sample", "decode"
    result.network_calls # network passes each image took (CFG batched into one pass counts once)

The promise every family keeps (tests/contract checks it for each registered family and sampler):
an image is a function of (model, request, settings) only -- never of the other requests in the
batch -- so the server may batch any compatible requests, and a seed always gives the same bytes.

Requests carry what varies per image: the prompt, the seed, and (for image editing, which a family
declares in `Pipeline.supports`) an init image, a mask and a strength. Settings carry what a batch
shares: a dataclass per family (`DiffusionSettings`, `ARSettings`, ...) on the common base
`Settings`, whose optional fields (`negative_prompt`, `style`, `cache`, `lora`) are refused with a
one-line `UserInputError` by a pipeline that does not list them in `supports`.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Callable, ClassVar, Sequence

from PIL import Image

from .errors import UserInputError
from .text.style import MAX_STYLE_CHARS, NO_STYLE

MAX_N = 256  # images per `generate` call; the server has its own, lower bound
MAX_PROMPT_CHARS = 2000
SEED_MAX = 2**63 - 1

# callback(step, total, preview) -> None, after each step; preview: (B, 3, h, w) float in [0, 1]
# or None. Raising inside the callback aborts the batch (the server uses that for cancel and
# timeouts); the exception propagates out of `sample`.
ProgressCallback = Callable[[int, int, object], None] | None


@dataclass(frozen=True)
class Request:
    """One image to make.

    prompt: non-empty text, at most MAX_PROMPT_CHARS characters (longer encodings are truncated
        to the text encoder's context with a warning).
    seed: integer in [0, 2^63); decides all of this image's randomness.
    init_image: optional RGB image to start from (img2img / inpainting), image_size square.
    mask: optional image, white = repaint, black = keep; needs init_image.
    strength: optional, in (0, 1]: how far from init_image the result may go (1 = ignore it);
        needs init_image.
    Families that do not list "init_image" in `Pipeline.supports` refuse the last three."""

    prompt: str
    seed: int
    init_image: Image.Image | None = None
    mask: Image.Image | None = None
    strength: float | None = None

    def check(self) -> None:
        """Raise UserInputError (one line, naming the field) if this request is malformed."""
        p, s = self.prompt, self.seed
        if not isinstance(p, str) or not p.strip():
            raise UserInputError("prompt must be a non-empty string")
        if len(p) > MAX_PROMPT_CHARS:
            raise UserInputError(f"prompt is {len(p)} characters; the limit is {MAX_PROMPT_CHARS}")
        if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s <= SEED_MAX:
            raise UserInputError(f"seed must be an integer in [0, 2^63), got {s!r}")
        if self.init_image is None and (self.mask is not None or self.strength is not None):
            raise UserInputError("mask and strength need an init_image")
        if self.strength is not None:
            st = self.strength
            if isinstance(st, bool) or not isinstance(st, (int, float)) or not 0.0 < st <= 1.0:
                raise UserInputError(f"strength must be a number in (0, 1], got {st!r}")

    @property
    def edits(self) -> bool:
        """True when this request starts from an image (init_image, mask or strength set)."""
        return self.init_image is not None


def requests(prompts: Sequence[str], seeds: Sequence[int]) -> list[Request]:
    """[Request(p, s) for p, s in zip(prompts, seeds)], refusing lists of different lengths."""
    if len(prompts) != len(seeds):
        raise UserInputError(f"{len(prompts)} prompts but {len(seeds)} seeds: one seed per prompt")
    return [Request(p, s) for p, s in zip(prompts, seeds)]


@dataclass(frozen=True)
class Settings:
    """What a batch shares. steps: solver steps / decode passes (a family may ignore it, and says
    so); guidance: classifier-free guidance scale, >= 0 (1 = off); sampler: one of the pipeline's
    `samplers`. Optional, None = off: negative_prompt (replaces the null prompt of guidance),
    style (a named style phrase), cache (a step-caching speed device), lora (an adapter folder).
    Equal settings may share a network call (the server batches on them)."""

    steps: int
    guidance: float
    sampler: str
    negative_prompt: str | None = None
    style: str | None = None
    cache: str | None = None
    lora: str | None = None

    OPTIONAL: ClassVar[tuple[str, ...]] = ("negative_prompt", "style", "cache", "lora")

    def to_dict(self) -> dict:
        """steps, guidance, sampler, and every other field that is set (not None): what a PNG's
        `parameters` chunk records."""
        out = {"steps": self.steps, "guidance": self.guidance, "sampler": self.sampler}
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name not in out and v is not None:
                out[f.name] = v
        return out


@dataclass
class SampleResult:
    """What `Pipeline.sample` returns.

    images: one PIL RGB image per request, in request order.
    timings: wall seconds per stage of this call: "text" (prompt encoding), "sample" (the network
        loop), "decode" (latents or tokens -> pixels).
    network_calls: per image, how many network passes computed its latents or tokens (a batched
        CFG pass counts once; a pass shared by a batch counts for each of its images; a pass that
        only caches the text prefix, as the AR family's masked mode runs once, is not counted).
    stats: family-specific extras (e.g. "tokens_per_pass" for speculative decoding)."""

    images: list[Image.Image]
    timings: dict[str, float] = field(default_factory=dict)
    network_calls: list[int] = field(default_factory=list)
    stats: dict = field(default_factory=dict)


class Pipeline:
    """Base class of every family's pipeline. A subclass sets `family`, `samplers`, `defaults`
    (a `settings_type` instance), `image_size`, `name`, and implements `_sample` and `save`;
    `from_folder(folder, device, dtype)` builds one from a model folder (the registry calls it).

    Class attributes: max_steps / max_guidance bound the settings; settings_type is the family's
    Settings dataclass; supports names the optional Request / Settings fields it honours.

    A family that supports "style" appends " in <style> style" to prompts (text/style.py) and
    sets `styles` (the styles its model was trained on; empty = any phrase) and `defaults.style`
    (from the model folder); `settings` fills and checks the style for it."""

    name: str
    family: str
    image_size: int
    defaults: Settings
    samplers: tuple[str, ...]
    max_steps: int = 500
    max_guidance: float = 30.0
    settings_type: type[Settings] = Settings
    supports: frozenset[str] = frozenset()
    styles: tuple[str, ...] = ()

    @property
    def sizes(self) -> list[str]:
        return [f"{self.image_size}x{self.image_size}"]

    def settings(self, steps=None, guidance=None, sampler=None, **extra) -> Settings:
        """Fill in the defaults and validate -> a `settings_type`. Every error is a UserInputError
        naming the argument and its allowed range: steps in [1, max_steps], guidance in
        [0, max_guidance], sampler in `samplers`, and extra fields that this family has and
        supports. A supported style of None (or absent) is the model's default style, "none" or
        "" is no style phrase; a model that lists `styles` accepts only those."""
        if "style" in self.supports:
            style = extra.get("style")
            extra["style"] = self.defaults.style if style is None else (None if style in NO_STYLE else style)
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
        known = {f.name for f in fields(self.settings_type)} - {"steps", "guidance", "sampler"}
        for k, v in extra.items():
            if k not in known:
                raise UserInputError(f"unknown setting {k!r} for the {self.family} family; "
                                     f"it has {', '.join(sorted(known)) or 'none'}")
            if v is not None and k in Settings.OPTIONAL and k not in self.supports:
                raise UserInputError(f"the {self.family} family does not support the {k!r} setting yet")
        s = self.settings_type(steps=steps, guidance=float(guidance), sampler=sampler, **extra)
        if "style" in self.supports:
            self._check_style(s.style)
        self._check_settings(s)
        return s

    def _check_style(self, st) -> None:
        if st is None:
            return
        if not isinstance(st, str) or len(st) > MAX_STYLE_CHARS or not st.strip():
            raise UserInputError(f"style must be a short phrase (at most {MAX_STYLE_CHARS} characters), got {st!r}")
        if self.styles and st not in self.styles:
            raise UserInputError(f"unknown style {st!r} for this model; it knows {', '.join(self.styles)} "
                                 "(or 'none' for no style phrase)")

    def _check_settings(self, settings: Settings) -> None:
        """Hook: validate the family's own settings fields (raise UserInputError)."""

    def sample(self, requests: Sequence[Request], settings: Settings,
               callback: ProgressCallback = None) -> SampleResult:
        """Make one image per request, all with `settings` (from `self.settings(...)`).

        Returns a SampleResult (images in request order, timings, network calls). Raises
        UserInputError for a malformed request or one this family cannot honour (an init_image
        where `supports` lacks it); an exception raised by `callback` aborts and propagates.
        An empty list gives an empty result."""
        if isinstance(requests, (str, Request)) or not all(isinstance(r, Request) for r in requests):
            raise UserInputError("sample takes a list of blinkgen.Request(prompt, seed); "
                                 "for a prompt string use generate(prompt, n, seed)")
        for r in requests:
            r.check()
            if r.edits and "init_image" not in self.supports:
                raise UserInputError(f"the {self.family} family does not take an init_image yet")
        if not isinstance(settings, self.settings_type):
            raise UserInputError(f"settings must be a {self.settings_type.__name__} from this pipeline's "
                                 f"settings(), got {type(settings).__name__}")
        if not requests:
            return SampleResult([], {}, [])
        return self._sample(list(requests), settings, callback)

    def generate(self, prompt: str | list[str], n: int = 1, seed: int | None = None, steps=None,
                 guidance=None, sampler=None, callback: ProgressCallback = None, **extra) -> list[Image.Image]:
        """n images of one prompt (or one image per prompt in a list), seeds seed, seed+1, ...
        -> a list of PIL images. `extra`: the family's other settings (e.g. style=...). Raises
        UserInputError for any argument out of range."""
        prompts = [prompt] * n if isinstance(prompt, str) else list(prompt)
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_N:
            raise UserInputError(f"n must be between 1 and {MAX_N}, got {n!r}")
        if seed is None:
            seed = 0
        settings = self.settings(steps, guidance, sampler, **extra)
        return self.sample(requests(prompts, [seed + i for i in range(len(prompts))]), settings, callback).images

    def png_parameters(self, prompt: str, seed: int, settings: Settings) -> dict:
        """The `parameters` a PNG of this image records (prompt, seed, settings, model)."""
        return {"prompt": prompt, "seed": seed, **settings.to_dict(), "model": self.name}

    def _sample(self, requests: list[Request], settings: Settings,
                callback: ProgressCallback) -> SampleResult:  # pragma: no cover - abstract
        raise NotImplementedError

    def save(self, path):  # pragma: no cover - abstract
        """Write this model as a model folder (config.json + *.safetensors) at path."""
        raise NotImplementedError
