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

Requests carry what varies per image: the prompt, the seed, an optional variation seed and
strength (the initial noise of two seeds mixed by spherical interpolation: "this one, but slightly
different"), and (for image editing) an init image, a mask and a strength -- each declared by a
family in `Pipeline.supports` ("variation", "init_image"). Settings carry what a batch
shares: a dataclass per family (`DiffusionSettings`, `ARSettings`, ...) on the common base
`Settings`, whose optional fields (`negative_prompt`, `style`, `cache`, `lora`) are refused with a
one-line `UserInputError` by a pipeline that does not list them in `supports`.

LoRA adapters (adapters.py, with the files in train/lora.py; `blinkgen finetune`): a pipeline that supports "lora" names the
attribute holding its generator network in `lora_network`; `settings(lora=DIR, lora_scale=0.8)`
checks that the adapter was trained on this very model (by the hash of its weights) and `sample`
runs a merged copy of the network (cached per adapter and scale). `pipe.with_lora(DIR)` is the same
pipeline with the adapter as its default (how the server serves "default+mascot").
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable, ClassVar, Sequence

from PIL import Image

from .adapters import LoraMixin
from .checks import as_float, as_int
from .errors import UserInputError
from .seeds import SEED_MAX, check_seed, seed_run  # noqa: F401  (SEED_MAX: re-exported)
from .text.style import MAX_STYLE_CHARS, NO_STYLE, style_key

if TYPE_CHECKING:
    import torch
from .textio import check_text

MAX_N = 256  # images per `generate` call; the server has its own, lower bound
MAX_PROMPT_CHARS = 2000

# callback(step, total, preview) -> None, after each step; preview: (B, 3, h, w) float in [0, 1]
# or None. Raising inside the callback aborts the batch (the server uses that for cancel and
# timeouts); the exception propagates out of `sample`.
ProgressCallback = Callable[[int, int, object], None] | None


@dataclass(frozen=True)
class Request:
    """One image to make.

    prompt: non-empty text, at most MAX_PROMPT_CHARS characters (longer encodings are truncated
        to the text encoder's context with a warning).
    seed: integer in [0, 2^63 - 1] (blinkgen.seeds; numpy integers too, not bool); decides all of
        this image's randomness.
    init_image: optional RGB image to start from (img2img / inpainting / upscaling); square, any
        side (resampled to the model's image_size); a non-square one is refused.
    mask: optional image of init_image's size marking what to repaint (data/image_io.read_mask):
        with transparency, OpenAI's convention -- transparent = repaint, opaque = keep; without,
        white = repaint, black = keep. Pixels it keeps come back exactly.
    init_image and mask may be anything the one image reader takes (PIL image, array, path,
    bytes); both go through it (data/image_io.py).
    strength: optional, in (0, 1]: how far from init_image the result may go (1 = ignore it; the
        default is 0.6 without a mask, 1 with one); needs init_image.
    variation_seed, variation_strength: optional, both or neither; the image's initial noise is
        slerp(noise(seed), noise(variation_seed), variation_strength) (sampling/noise.py), with
        the strength in [0, 1]: 0 gives exactly the image of `seed`, 1 exactly that of
        `variation_seed`, values between a neighbour of the first.
    Families that do not list these in `Pipeline.supports` ("init_image", "variation") refuse them."""

    prompt: str
    seed: int
    init_image: Image.Image | None = None
    mask: Image.Image | None = None
    strength: float | None = None
    variation_seed: int | None = None
    variation_strength: float | None = None

    def check(self) -> "Request":
        """Raise UserInputError (one line, naming the field) if this request is malformed; return
        it with the seed as a Python int and the strength as a float (numpy numbers accepted)."""
        p = self.prompt
        if not isinstance(p, str) or not p.strip():
            raise UserInputError("prompt must be a non-empty string")
        if len(p) > MAX_PROMPT_CHARS:
            raise UserInputError(f"prompt is {len(p)} characters; the limit is {MAX_PROMPT_CHARS}")
        check_text(p, "prompt")
        seed = check_seed(self.seed)
        if self.init_image is None and (self.mask is not None or self.strength is not None):
            raise UserInputError("mask and strength need an init_image")
        strength = self.strength
        if strength is not None:
            strength = check_strength(strength)
        vseed, vstrength = self.variation_seed, self.variation_strength
        if (vseed is None) != (vstrength is None):
            raise UserInputError("variation_seed and variation_strength go together: give both or neither")
        if vseed is not None:
            vseed = check_seed(vseed, "variation_seed")
            vstrength = as_float(vstrength, "variation_strength", 0.0, 1.0)
        if (seed is self.seed and strength is self.strength and vseed is self.variation_seed
                and vstrength is self.variation_strength):
            return self
        return replace(self, seed=seed, strength=strength, variation_seed=vseed, variation_strength=vstrength)

    @property
    def edits(self) -> bool:
        """True when this request starts from an image (init_image, mask or strength set)."""
        return self.init_image is not None

    @property
    def variation(self) -> tuple[int, float] | None:
        """(variation_seed, variation_strength) when set, else None."""
        return None if self.variation_seed is None else (self.variation_seed, self.variation_strength)


def check_strength(value) -> float:
    """An edit's strength as a float in (0, 1] (the share of the path redrawn: 1 = from pure
    noise); one message for every wrong value. UserInputError otherwise."""
    v = as_float(value, "strength")
    if not 0.0 < v <= 1.0:
        raise UserInputError(f"strength must be a number in (0, 1], got {v}")
    return v


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
    style (a named style phrase), cache (a step-caching speed device), lora (a LoRA adapter
    folder, stored resolved) and lora_scale (its strength, default 1 when lora is set; in [-4, 4]).
    Equal settings may share a network call (the server batches on them)."""

    steps: int
    guidance: float
    sampler: str
    negative_prompt: str | None = None
    style: str | None = None
    cache: str | None = None
    lora: str | None = None
    lora_scale: float | None = None

    OPTIONAL: ClassVar[tuple[str, ...]] = ("negative_prompt", "style", "cache", "lora", "lora_scale")

    def to_dict(self) -> dict:
        """steps, guidance, sampler, and every other field that is set (not None): what a PNG's
        `parameters` chunk records."""
        out = {"steps": self.steps, "guidance": self.guidance, "sampler": self.sampler}
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name not in out and v is not None:
                out[f.name] = v
        return out


def check_negative_prompt(text) -> str | None:
    """The negative_prompt setting: a string of at most MAX_PROMPT_CHARS characters; blank (or
    None) means none -> None. UserInputError otherwise."""
    if text is None:
        return None
    if not isinstance(text, str):
        raise UserInputError(f"negative_prompt must be a string, got {type(text).__name__}")
    if len(text) > MAX_PROMPT_CHARS:
        raise UserInputError(f"negative_prompt is {len(text)} characters; the limit is {MAX_PROMPT_CHARS}")
    return check_text(text, "negative_prompt") if text.strip() else None


@dataclass
class SampleResult:
    """What `Pipeline.sample` returns.

    images: one PIL RGB image per request, in request order.
    timings: wall seconds per stage of this call: "text" (prompt encoding), "sample" (the network
        loop), "decode" (latents or tokens -> pixels), and "encode" (init images -> latents) when
        a request edits an image, in families that time it apart.
    network_calls: per image, how many network passes computed its latents or tokens (a batched
        CFG pass counts once; a pass shared by a batch counts for each of its images; a pass that
        only caches the text prefix, as the AR family's masked mode runs once, is not counted).
    stats: family-specific extras (e.g. "tokens_per_pass" for speculative decoding)."""

    images: list[Image.Image]
    timings: dict[str, float] = field(default_factory=dict)
    network_calls: list[int] = field(default_factory=list)
    stats: dict = field(default_factory=dict)


class Pipeline(LoraMixin):
    """Base class of every family's pipeline. A subclass sets `family`, `samplers`, `defaults`
    (a `settings_type` instance), `image_size`, `name`, and implements `_sample` and `save`;
    `from_folder(folder, device, dtype)` builds one from a model folder (the registry calls it).

    Class attributes: max_steps / max_guidance bound the settings; settings_type is the family's
    Settings dataclass; supports names the optional Request / Settings fields it honours
    ("init_image", "mask", "strength", "style", ...); requires names the Request fields every
    request must carry (an upscaler's "init_image").

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
    requires: frozenset[str] = frozenset()
    folder: Path | None = None  # the model folder it was loaded from (None: built in memory)
    lora_network: str | None = None  # attribute holding the network LoRA adapters attach to
    styles: tuple[str, ...] = ()

    @property
    def sizes(self) -> list[str]:
        return [f"{self.image_size}x{self.image_size}"]

    def settings(self, steps=None, guidance=None, sampler=None, **extra) -> Settings:
        """Fill in the defaults and validate -> a `settings_type`. Every error is a UserInputError
        naming the argument and its allowed range: steps in [1, max_steps], guidance in
        [0, max_guidance], sampler in `samplers`, and extra fields that this family has and
        supports. steps takes anything integral (numpy ints too), guidance any real number; bool
        is refused (blinkgen.checks). A supported style of None (or absent) is the model's default
        style, "none" or "" is no style phrase; a model that lists `styles` accepts only those."""
        if "style" in self.supports:
            style = extra.get("style")
            if isinstance(style, str) and style_key(style) in NO_STYLE:
                style = ""  # "None", " none ": no style phrase, as "none"
            extra["style"] = self.defaults.style if style is None else (None if style in NO_STYLE else style)
        d = self.defaults
        steps = as_int(d.steps if steps is None else steps, "steps", 1, self.max_steps)
        guidance = as_float(d.guidance if guidance is None else guidance, "guidance", 0.0, self.max_guidance)
        sampler = d.sampler if sampler is None else sampler
        if not isinstance(sampler, str) or sampler not in self.samplers:
            raise UserInputError(f"unknown sampler {sampler!r}; choose one of {', '.join(self.samplers)}")
        known = {f.name for f in fields(self.settings_type)} - {"steps", "guidance", "sampler"}
        for k in ("lora", "lora_scale"):  # a with_lora() pipeline's adapter is its default
            if extra.get(k) is None and getattr(d, k, None) is not None:
                extra[k] = getattr(d, k)
        for k, v in extra.items():
            if k not in known:
                raise UserInputError(f"unknown setting {k!r} for the {self.family} family; "
                                     f"it has {', '.join(sorted(known)) or 'none'}")
            need = "lora" if k == "lora_scale" else k  # the scale comes with adapters
            if v is not None and k in Settings.OPTIONAL and need not in self.supports:
                raise UserInputError(f"the {self.family} family does not support the {k!r} setting yet")
        if "negative_prompt" in extra:
            extra["negative_prompt"] = check_negative_prompt(extra["negative_prompt"])
        s = self.settings_type(steps=steps, guidance=guidance, sampler=sampler, **extra)
        if "style" in self.supports:
            s = replace(s, style=self._check_style(s.style))
        s = self._check_lora(s)
        return self._check_settings(s) or s

    def _check_style(self, st) -> str | None:
        """The style as the model names it (its `styles` match in any case: "Twemoji" is "twemoji",
        so one style is one image and one record); UserInputError for a style it does not know."""
        if st is None:
            return None
        if not isinstance(st, str) or len(st) > MAX_STYLE_CHARS or not st.strip():
            raise UserInputError(f"style must be a short phrase (at most {MAX_STYLE_CHARS} characters), got {st!r}")
        check_text(st, "style")
        canon = {style_key(x): x for x in self.styles or ()}.get(style_key(st))
        if self.styles and canon is None:
            raise UserInputError(f"unknown style {st!r} for this model; it knows {', '.join(self.styles)} "
                                 "(or 'none' for no style phrase)")
        return canon or st

    def _check_settings(self, settings: Settings) -> Settings | None:
        """Hook: validate the family's own settings fields (raise UserInputError); may return a
        normalised copy (numpy numbers as Python ones), else None."""

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
        requests = [r.check() for r in requests]  # seeds as Python ints (blinkgen.seeds)
        for r in requests:
            self._check_request(r)
        if not isinstance(settings, self.settings_type):
            raise UserInputError(f"settings must be a {self.settings_type.__name__} from this pipeline's "
                                 f"settings(), got {type(settings).__name__}")
        if not requests:
            return SampleResult([], {}, [])
        return self._sample(list(requests), settings, callback)

    def _check_request(self, r: Request) -> None:
        """Refuse (UserInputError) the request fields this pipeline does not take, and a missing
        init_image where it is required."""
        if r.edits and "init_image" not in self.supports:
            raise UserInputError(f"the {self.family} family does not take an init_image yet")
        for name in ("mask", "strength"):
            if getattr(r, name) is not None and name not in self.supports:
                raise UserInputError(f"the {self.family} family does not take a {name}")
        if r.variation is not None and "variation" not in self.supports:
            raise UserInputError(f"the {self.family} family does not take a variation seed yet")
        # last: a field the family never takes is the more useful message than a missing one
        if "init_image" in self.requires and not r.edits:
            raise UserInputError(f"the {self.family} family needs an init_image in every request")

    def generate(self, prompt: str | list[str], n: int = 1, seed: int | None = None, steps=None,
                 guidance=None, sampler=None, callback: ProgressCallback = None, **extra) -> list[Image.Image]:
        """n images of one prompt (or one image per prompt in a list), seeds seed, seed+1, ...
        (blinkgen.seeds.seed_run: in [0, 2^63 - 1], never wrapped) -> a list of PIL images.
        `extra`: the family's other settings (e.g. style=...). Integer arguments take anything
        integral (numpy ints too) and refuse bool. Raises UserInputError for any argument out of
        range."""
        n = as_int(n, "n", 1, MAX_N)
        prompts = [prompt] * n if isinstance(prompt, str) else list(prompt)
        seeds = seed_run(0 if seed is None else seed, len(prompts))
        settings = self.settings(steps, guidance, sampler, **extra)
        return self.sample(requests(prompts, seeds), settings, callback).images

    def png_parameters(self, prompt: str, seed: int, settings: Settings, request: Request | None = None) -> dict:
        """The `parameters` a PNG of this image records: prompt, seed, settings, the model's name
        and, when the pipeline was loaded from a folder, `model_hash` (modelio.weights_hash of
        its weights: what `blinkgen generate --from` checks), plus the request's variation seed
        and strength when it has them."""
        out = {"prompt": prompt, "seed": seed, **settings.to_dict(), "model": self.name}
        if getattr(self, "model_hash", None):
            out["model_hash"] = self.model_hash
        out.update(self.run_environment())
        if request is not None and request.variation is not None:
            out["variation_seed"], out["variation_strength"] = request.variation
        return out

    def run_environment(self) -> dict:
        """What besides the model and settings decides an image's exact bytes, where it is not
        the default: {"dtype": "bf16"} for a network not in fp32, {"device": "cuda"} off the
        CPU. Recorded in PNGs so a replay can say why it differs."""
        from .precision import DTYPES

        out = {}
        dt = getattr(self, "dtype", None)
        name = next((k for k, v in DTYPES.items() if v == dt), None)
        if name not in (None, "fp32"):
            out["dtype"] = name
        dev = getattr(self, "device", None)
        if dev is not None and getattr(dev, "type", str(dev)) != "cpu":
            out["device"] = getattr(dev, "type", str(dev))
        return out

    def round_trip(self, images: torch.Tensor) -> torch.Tensor | None:
        """Real images as this model's image decoder draws them: (N, 3, H, W) uint8 in, the same
        after its encoder and decoder (a latent model's autoencoder, an AR model's tokenizer) out,
        or None for a family that has no encoder to pass real images through (GAN, VAE). No model
        drawing through that decoder makes these images better than this, so `blinkgen eval`
        reports the real images' scores after it beside the raw ones."""
        return None

    def _sample(self, requests: list[Request], settings: Settings,
                callback: ProgressCallback) -> SampleResult:  # pragma: no cover - abstract
        raise NotImplementedError

    def save(self, path):  # pragma: no cover - abstract
        """Write this model as a model folder (config.json + *.safetensors) at path."""
        raise NotImplementedError
