"""Request and response shapes of the images API.

Requests follow OpenAI's `POST /v1/images/generations` body, with blinkgen's extras (`seed`,
`steps`, `guidance`, `sampler`, `negative_prompt`, `cache`, `variation_seed` and
`variation_strength`, `priority`, and for jobs `webhook_url`) as extra top-level fields -- where
the official client puts `extra_body`. Which optional keys a model takes, and on which
endpoints, its /v1/models card says (`supports` and `endpoints`, from `served_keys`). Models are
strict (no "2" for 2, no true for 1, no NaN) and forbid unknown fields, so a typo such as `stpes`
is a 400 that names it instead of a silently ignored setting.

Every field the official client's `images.generate` can send is either honoured or refused with
a 400 that names the accepted values (`OPENAI_CHOICES`, `check_openai_fields`):
- honoured: prompt, model, n, size (a model size, or "auto" = the model's size), response_format,
  output_format "png", background "opaque" (every image is opaque);
- accepted as documented no-ops: background/moderation "auto", moderation "low" (blinkgen does
  no moderation), the quality/complexity hints (quality comes from `steps` here), user and
  safety_identifier, stream false, partial_images 0;
- `style`, where OpenAI (dall-e-3's "vivid"/"natural") and blinkgen (a style phrase, as the CLI's
  `--style`) collide: the two OpenAI hints are accepted no-ops (`STYLE_HINTS`), any other string
  is the model's style phrase, checked against the model's styles (`service.resolve_style`);
- refused: what cannot be honoured -- other output formats, transparent backgrounds, stream=true
  (use /v1/jobs and its event stream), partial images, output_compression, GIF frames, svg.

Seeds follow `blinkgen.seeds`: [0, 2^63 - 1], the n images get seed, seed+1, ... and a request
whose last seed would pass the range is a 400 (never wrapped), as in the CLI and the Python API.

Bounds that depend on the loaded model (size, steps, sampler) are checked later against the model;
bounds that are the server's policy (n, prompt length) live in `Limits` and are checked in
`validate_limits`, so the OpenAPI schema and the real checks cannot drift apart.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from ..seeds import SEED_MAX
from ..text.style import MAX_STYLE_CHARS

MAX_N = 10  # OpenAI's bound on images per request
MAX_GUIDANCE = 100.0  # far above any useful scale; stops absurd values before the model sees them
MAX_PRIORITY = 10  # job priorities are integers in [-10, 10]


def _integral_float_to_int(v):
    """JSON Schema counts 2.0 as an integer, so accept it; "2", true and 2.5 stay errors."""
    return int(v) if isinstance(v, float) and v.is_integer() else v


def json_int(ge: int, le: int):
    """A bounded integer that also takes 2.0 (constraints first, so the JSON schema keeps them)."""
    return Annotated[int, Field(ge=ge, le=le), BeforeValidator(_integral_float_to_int)]


@dataclass(frozen=True)
class Limits:
    """The server's policy bounds (the model's own bounds are checked by `Pipeline.settings`)."""

    max_n: int = MAX_N
    max_prompt_chars: int = 1000
    max_steps: int | None = None  # None: the model's own max_steps


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """OpenAI's error envelope: every 4xx/5xx body has this shape."""

    error: ErrorBody


class ImageFields(BaseModel):
    """The fields of every image request: generations and jobs (`ImageRequest`), edits and
    variations (`EditRequest`)."""

    model_config = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)

    prompt: str = Field(min_length=1, max_length=100_000, description="What to draw.")
    model: str | None = Field(None, max_length=200, description="A loaded model's name; default: the first.")
    n: json_int(1, MAX_N) = Field(1, description="Images to make (one seed each: seed, seed+1, ...).")
    size: str | None = Field(None, max_length=32, description='"WxH", one of the model\'s sizes, or "auto" '
                                                           '(the model\'s size).')
    response_format: Literal["b64_json", "url"] = Field(
        "b64_json", description="`url` links expire after the server's --url-ttl-s.")
    seed: json_int(0, SEED_MAX) | None = Field(
        None, description="Seed of the first image, in [0, 2^63 - 1] (as the CLI writes into PNGs); "
                          "random in [0, 2^32) if absent. seed + n - 1 must stay in range.")
    steps: json_int(1, 10_000) | None = Field(None, description="Sampling steps; model default if absent.")
    guidance: Annotated[float, Field(ge=0.0, le=MAX_GUIDANCE)] | None = Field(None, description="Classifier-free guidance scale.")
    sampler: str | None = Field(None, max_length=64, description="One of the model's samplers.")
    supersede: str | None = Field(None, min_length=1, max_length=64, description=(
        "Live generation: a newer request with the same key (from the same API key) cancels this one "
        "if it is still queued or running (the page sends one per keystroke)."))
    # issue 16: everyday generation
    negative_prompt: str | None = Field(None, max_length=100_000, description="What guidance steers away from "
                                        "(replaces the null prompt of classifier-free guidance).")
    priority: json_int(-MAX_PRIORITY, MAX_PRIORITY) | None = Field(
        None, description="Higher runs first among waiting jobs (default 0); waiting raises a job's priority "
                          "by one level every few seconds, so no job waits forever.")
    webhook_url: str | None = Field(None, max_length=2000, description="POST /v1/jobs only: called once when the "
                                    "job finishes, signed with HMAC-SHA256 (X-Blinkgen-Signature); loopback "
                                    "addresses and the server's --webhook-host hosts only.")
    # The rest of OpenAI's fields: honoured, documented no-ops, or a clear 400 (module doc).
    output_format: str | None = Field(None, max_length=32, description='"png" (the only format served).')
    background: str | None = Field(None, max_length=32, description='"auto" or "opaque" (images are opaque).')
    moderation: str | None = Field(None, max_length=32, description='"auto" or "low": no-ops (no moderation).')
    quality: str | None = Field(None, max_length=32, description="Accepted and ignored: use `steps`.")
    style: str | None = Field(None, max_length=MAX_STYLE_CHARS, description=(
        "The model's style phrase (as the CLI's --style: \"twemoji\" draws \"<prompt> in twemoji style\"; "
        "\"none\" for none; default: the model's style); OpenAI's hints 'vivid' and 'natural' are "
        "accepted and ignored."))
    cache: str | None = Field(None, max_length=64, description="Step caching (as the CLI's --cache), e.g. "
                              "\"deep:2\"; models whose card lists `cache`.")
    complexity: str | None = Field(None, max_length=32, description="Accepted and ignored.")
    user: str | None = Field(None, max_length=256, description="Accepted and ignored.")
    safety_identifier: str | None = Field(None, max_length=256, description="Accepted and ignored.")
    stream: bool | None = Field(None, description="Only false: use POST /v1/jobs and its /events stream.")
    partial_images: json_int(0, 3) | None = Field(None, description="Only 0 (partial images need streaming).")
    output_compression: json_int(0, 100) | None = Field(None, description="Refused: applies to jpeg/webp only.")
    frame_count: json_int(0, 1000) | None = Field(None, description="Refused: GIF output is not served.")
    frame_duration_ms: json_int(0, 10**9) | None = Field(None, description="Refused: GIF output is not served.")
    svg: dict | None = Field(None, description="Refused: SVG output is not served.")


class ImageRequest(ImageFields):
    """Body of `POST /v1/images/generations` and `POST /v1/jobs`: ImageFields, plus variation seeds."""

    variation_seed: json_int(0, SEED_MAX) | None = Field(
        None, description="Mix the noise of `seed` with this seed's (as the CLI's --variation-seed; with "
                          "variation_strength). The n images get variation_seed, variation_seed+1, ...")
    variation_strength: Annotated[float, Field(ge=0.0, le=1.0)] | None = Field(
        None, description="With variation_seed: 0 is the image of `seed`, 1 that of `variation_seed`.")


class EditRequest(ImageFields):
    """The text fields of `POST /v1/images/edits` (multipart/form-data, as OpenAI's client sends
    them; the files are `image` -- or one `image[]` -- and an optional `mask`). ImageFields plus
    `strength`; `style` is as in generations (a style phrase does style transfer: "twemoji" asks
    for "<prompt> in twemoji style")."""

    strength: Annotated[float, Field(gt=0.0, le=1.0)] | None = Field(
        None, description="How far from the image the result may go, (0, 1]; default 0.6, with a mask 1.")
    input_fidelity: Literal["high", "low"] | None = Field(None, description="Accepted and ignored: use strength.")


class VariationRequest(EditRequest):
    """The text fields of `POST /v1/images/variations`: OpenAI sends no prompt; blinkgen then
    steers the variation towards the image's best caption (the evaluator's captioner), or towards
    `prompt` when given."""

    prompt: str | None = Field(None, min_length=1, max_length=100_000,
                               description="Optional: what the variation should keep saying (default: the image's caption).")


class ImageDatum(BaseModel):
    model_config = ConfigDict(extra="allow")

    b64_json: str | None = None
    url: str | None = None
    revised_prompt: str | None = None
    seed: int


class ImagesResponse(BaseModel):
    model_config = ConfigDict(extra="allow")

    created: int
    data: list[ImageDatum]
    output_format: Literal["png"] = "png"
    background: Literal["opaque"] = "opaque"
    size: str | None = None


class Progress(BaseModel):
    step: int = Field(description="Step of the batch now running (0 before it starts); once done, the final "
                                  "step (= steps).")
    steps: int = Field(description="Steps per image.")
    images_done: int
    images_total: int
    fraction: float = Field(description="0..1 over all of the job's images.")


class JobResponse(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str
    object: Literal["image.job"] = "image.job"
    state: Literal["queued", "running", "done", "failed", "cancelled"]
    created: int
    model: str
    prompt: str
    settings: dict[str, Any] = Field(description="The resolved steps, guidance and sampler.")
    queue_position: int | None = Field(None, description="Jobs ahead of this one; null once running.")
    progress: Progress
    data: list[ImageDatum] = Field(default_factory=list, description="Finished images so far.")
    error: ErrorBody | None = None
    preview: str | None = Field(None, description="Low-resolution PNG data URL of the running image.")
    batch_sizes: list[int] = Field(default_factory=list, description="Sizes of the model calls it joined.")


class ModelCard(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "blinkgen"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class UserError(Exception):
    """A request the client can fix; rendered as an OpenAI error with this status."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None,
                 status: int = 400, type: str = "invalid_request_error",
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message, self.param, self.code = message, param, code
        self.status, self.type, self.headers = status, type, headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type,
                          "param": self.param, "code": self.code}}


# Where a model's optional features (`Pipeline.supports`) reach it over HTTP: feature -> (the
# request keys that carry it, the endpoints that take those keys). A model card lists each key
# with its endpoints (`served_keys`), and tests/e2e/test_serve_supports.py sends every listed key
# to every listed endpoint, so the listing and the request schemas cannot drift apart.
GENERATE_PATHS = ("/v1/images/generations", "/v1/jobs")
EDIT_PATHS = ("/v1/images/edits", "/v1/jobs/edits")
UPLOAD_PATHS = (*EDIT_PATHS, "/v1/images/variations")
SERVED_FEATURES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "negative_prompt": (("negative_prompt",), GENERATE_PATHS + UPLOAD_PATHS),
    "style": (("style",), GENERATE_PATHS + UPLOAD_PATHS),
    "cache": (("cache",), GENERATE_PATHS + UPLOAD_PATHS),
    "variation": (("variation_seed", "variation_strength"), GENERATE_PATHS),
    "init_image": (("image",), UPLOAD_PATHS),
    "mask": (("mask",), EDIT_PATHS),
    "strength": (("strength",), UPLOAD_PATHS),
}
# Features no request key reaches: feature -> why (what to do instead).
UNSERVED_FEATURES = {"lora": "adapters are served as models of their own ('default+mascot', blinkgen serve --lora)"}


def served_keys(supports, requires=()) -> dict[str, list[str]]:
    """A model's optional request keys on this server -> the endpoints that take them, from its
    `supports` and `requires` (a model that needs an image takes no generations; one that does
    not take images has no upload endpoints). Features in neither table are not listed."""
    open_paths = set(UPLOAD_PATHS) if "init_image" in supports else set()
    if "init_image" not in requires:
        open_paths |= set(GENERATE_PATHS)
    out: dict[str, list[str]] = {}
    for feature in supports:
        keys, paths = SERVED_FEATURES.get(feature, ((), ()))
        for key in keys:
            if where := [p for p in paths if p in open_paths]:
                out[key] = where
    return dict(sorted(out.items()))


# OpenAI fields with a fixed set of values this server can honour or harmlessly ignore:
# field -> (accepted values, why others are refused / what the value does here).
OPENAI_CHOICES: dict[str, tuple[tuple[str, ...], str]] = {
    "output_format": (("png",), "this server returns PNG images"),
    "background": (("auto", "opaque"), "images are always opaque"),
    "moderation": (("auto", "low"), "blinkgen does no content moderation, so both are no-ops"),
    "quality": (("auto", "low", "medium", "high", "xhigh", "max", "standard", "hd"),
                "a hint that is ignored here: image quality comes from `steps`"),
    "complexity": (("low", "medium", "high"), "a hint that is ignored here"),
}
# OpenAI's `style` values (dall-e-3's legacy hints): accepted and ignored; any other style is a phrase.
STYLE_HINTS = ("vivid", "natural")
# OpenAI fields with no honourable non-default value: field -> (allowed value, why refused).
OPENAI_REFUSED: dict[str, tuple[object, str]] = {
    "stream": (False, "streaming responses are not served; use POST /v1/jobs and GET /v1/jobs/{id}/events"),
    "partial_images": (0, "partial images need streaming; POST /v1/jobs streams previews at /v1/jobs/{id}/events"),
    "output_compression": (None, "it applies to jpeg/webp output only, and this server returns PNG"),
    "frame_count": (None, "GIF output is not served (output_format is png)"),
    "frame_duration_ms": (None, "GIF output is not served (output_format is png)"),
    "svg": (None, "SVG output is not served (output_format is png)"),
}


def check_openai_fields(req: ImageFields) -> None:
    """400 (naming the accepted values) for an OpenAI field value that cannot be honoured."""
    for name, (accepted, why) in OPENAI_CHOICES.items():
        v = getattr(req, name)
        if v is not None and v not in accepted:
            raise UserError(f"{name} {v!r} is not supported: {why}; accepted: {', '.join(accepted)}",
                            param=name, code="unsupported_value")
    for name, (allowed, why) in OPENAI_REFUSED.items():
        v = getattr(req, name)
        if v is not None and v != allowed:
            ok = "omit it" if allowed is None else f"omit it or send {str(allowed).lower()}"
            raise UserError(f"{name}={v!r} is not supported: {why}; {ok}", param=name, code="unsupported_value")


def validate_limits(req: ImageFields, limits: Limits) -> None:
    """Server policy checks that the schema cannot express because they are configurable, and
    the OpenAI fields that cannot be honoured (`check_openai_fields`)."""
    check_openai_fields(req)
    if req.prompt is None:  # a variation without a prompt: the server captions the image
        return _check_numbers(req, limits)
    if not req.prompt.strip():
        raise UserError("prompt must not be blank", param="prompt", code="invalid_prompt")
    if len(req.prompt) > limits.max_prompt_chars:
        raise UserError(f"prompt is {len(req.prompt)} characters; the limit is {limits.max_prompt_chars}",
                        param="prompt", code="prompt_too_long")
    if "\x00" in req.prompt:
        raise UserError("prompt must not contain NUL characters", param="prompt", code="invalid_prompt")
    _check_numbers(req, limits)


def _check_numbers(req: ImageFields, limits: Limits) -> None:
    neg = req.negative_prompt
    if neg is not None and len(neg) > limits.max_prompt_chars:
        raise UserError(f"negative_prompt is {len(neg)} characters; the limit is {limits.max_prompt_chars}",
                        param="negative_prompt", code="prompt_too_long")
    if neg is not None and "\x00" in neg:
        raise UserError("negative_prompt must not contain NUL characters", param="negative_prompt",
                        code="invalid_prompt")
    if req.n > limits.max_n:
        raise UserError(f"n must be between 1 and {limits.max_n}", param="n", code="invalid_n")
    if limits.max_steps is not None and req.steps is not None and req.steps > limits.max_steps:
        raise UserError(f"steps must be between 1 and {limits.max_steps} on this server",
                        param="steps", code="invalid_steps")
    if req.guidance is not None and not math.isfinite(req.guidance):
        raise UserError("guidance must be a finite number", param="guidance", code="invalid_guidance")


def refine_openapi(schema: dict, cards: list[dict], limits: Limits) -> dict:
    """Narrow the request schema to what this server really accepts (loaded model names, their
    sizes, samplers and step caps, the prompt limit), so generated clients and fuzzers see the
    truth instead of "any string"."""
    comps = schema.get("components", {}).get("schemas", {})
    props = comps.get("ImageRequest", {}).get("properties")
    if not props or not cards:
        return schema

    def nullable(inner: dict, old: dict) -> dict:
        keep = {k: old[k] for k in ("default", "description", "title") if k in old}
        return {"anyOf": [inner, {"type": "null"}], **keep}

    uniq = lambda xs: sorted(set(xs))  # noqa: E731
    props["model"] = nullable({"type": "string", "enum": [c["id"] for c in cards]}, props["model"])
    props["size"] = nullable({"type": "string", "enum": uniq([*(s for c in cards for s in c["sizes"]), "auto"])},
                             props["size"])
    for name, (accepted, _) in OPENAI_CHOICES.items():
        props[name] = nullable({"type": "string", "enum": list(accepted)}, props[name])
    props["sampler"] = nullable({"type": "string", "enum": uniq(s for c in cards for s in c["samplers"])},
                                props["sampler"])
    props["steps"] = nullable({"type": "integer", "minimum": 1, "maximum": max(c["max_steps"] for c in cards)},
                              props["steps"])
    props["guidance"] = nullable({"type": "number", "minimum": 0.0,
                                  "maximum": max(c.get("max_guidance", MAX_GUIDANCE) for c in cards)},
                                 props["guidance"])
    # pydantic writes le=2^63-1 as the float 9.223372036854776e18 (= 2^63): give the exact integer
    props["seed"] = nullable({"type": "integer", "minimum": 0, "maximum": SEED_MAX}, props["seed"])
    props["prompt"]["maxLength"] = limits.max_prompt_chars
    if "negative_prompt" in props:
        props["negative_prompt"] = nullable({"type": "string", "maxLength": limits.max_prompt_chars},
                                            props["negative_prompt"])
    props["n"]["maximum"] = limits.max_n
    return schema
