"""The server's state: its policy (`ServeConfig`) and what a running server owns (`Service`: the
models, the job store, the batcher, metrics, live-generation supersede keys, webhooks). The HTTP
routes over it are in app.py; generation happens in the batcher's worker thread (batcher.py)."""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from ..errors import UserInputError
from ..seeds import random_seed, seed_run
from ..text.style import NO_STYLE
from .batcher import Batcher
from .edits import check_edit
from .jobs import Job, JobStore, image_datum, snapshot
from .metrics import Metrics
from .schemas import STYLE_HINTS, ImageFields, Limits, UserError, served_keys, validate_limits

LIVE_KEYS = 4096  # supersede keys remembered (oldest forgotten first): bounded like every other store


@dataclass
class ServeConfig:
    """Server policy. Defaults suit one CPU box; `blinkgen serve --help` exposes each one."""

    max_batch: int = 16
    batch_window_ms: float = 0.0  # bench/RESULTS.md: 0 was as fast or faster than 10 ms at 1-64 clients
    max_queue: int = 256  # images waiting (not requests): n=10 weighs ten times n=1
    timeout_s: float = 300.0  # per request, queue time included
    url_ttl_s: float = 3600.0
    keep_jobs: int = 2000  # finished jobs kept for polling (each also at most url_ttl_s)
    keep_images: int = 4096  # linked images kept (url responses, jobs), and images of kept finished jobs
    keep_mb: float = 512.0  # PNG megabytes kept behind url links, and in kept finished jobs
    max_body_bytes: int = 64 * 1024
    max_upload_bytes: int = 4 * 2**20  # per uploaded image (edits, variations): OpenAI's "less than 4MB"
    max_upload_side: int = 1024  # pixels a side of an uploaded image (OpenAI's largest square)
    shutdown_grace_s: float = 30.0
    api_keys: frozenset = frozenset()
    limits: Limits = field(default_factory=Limits)
    warmup: bool = True
    # issue 16: models loaded while serving (admin.py) and webhooks (webhooks.py)
    admin_keys: frozenset = frozenset()  # may POST /v1/models/load and DELETE /v1/models/{id}
    webhook_secret: bytes | None = None  # HMAC key of webhook signatures; None: webhooks refused
    webhook_hosts: frozenset = frozenset()  # hosts besides loopback that webhooks may call
    device: str = "cpu"  # where models loaded while serving go
    dtype: str = "fp32"


class Service:
    """Everything a running server owns: models, jobs, batcher, metrics."""

    def __init__(self, generators: dict, config: ServeConfig):
        if not generators:
            raise ValueError("serve needs at least one model")
        self.generators, self.config = dict(generators), config
        self.metrics = Metrics()
        self.store = JobStore(ttl_s=max(config.url_ttl_s, 60.0), max_finished=config.keep_jobs,
                              url_ttl_s=config.url_ttl_s, max_images=config.keep_images,
                              max_bytes=int(config.keep_mb * 2**20), on_final=self.metrics.observe_job_end)
        self.batcher = Batcher(self.generators, self.store, self.metrics, config.max_batch,
                               config.batch_window_ms / 1000.0, config.max_queue, warmup=config.warmup)
        self.metrics.kept = self.store.stats
        self._evaluator, self._caption_lock = None, threading.Lock()
        self.started = int(time.time())
        self.live: OrderedDict[tuple, Job] = OrderedDict()  # (owner, supersede key) -> its newest job
        self.device, self.dtype = config.device, config.dtype
        self.webhooks = None
        if config.webhook_secret:
            from .webhooks import Dispatcher

            self.webhooks = Dispatcher(config.webhook_secret)
            self.store.on_job_final = self._call_webhook

    def supersede(self, job: Job, key: str | None, owner: str | None) -> None:
        """Live generation: `job` replaces the caller's previous job with the same supersede key,
        which is cancelled if it has not finished (queued: dropped now; running: stopped at its
        next step), so a user typing never waits behind, or pays CPU for, a prompt they changed."""
        if not key:
            return
        with self.batcher.cond:
            old = self.live.pop((owner, key), None)
            self.live[(owner, key)] = job
            while len(self.live) > LIVE_KEYS:
                self.live.popitem(last=False)
            state = old.state if old is not None else None
        if old is not None and old.alive and self.batcher.cancel(old, {
                "message": "superseded by a newer request with the same supersede key",
                "type": "invalid_request_error", "param": "supersede", "code": "superseded"}):
            self.metrics.observe_superseded(state)

    def _call_webhook(self, job: Job) -> None:
        """JobStore hook (under its lock, once per job): enqueue the job's webhook delivery."""
        if job.webhook is not None and self.webhooks is not None:
            base = job.webhook.base_url
            out = snapshot(job, base, None, with_images=False)
            # images as links (webhooks.py): a b64 job would put megabytes into every (re)try
            out["data"] = [image_datum(r, "url", base, job.prompt, job.revised_prompt)
                           for r in job.results if r is not None]
            body = {"type": "job.finished", "job": out}
            self.webhooks.submit(job.webhook.url, body)

    def default_model(self) -> str:
        """The model of requests that name none: the first loaded one not being unloaded."""
        unloading = self.batcher.unloading
        return next((m for m in self.generators if m not in unloading), next(iter(self.generators)))

    def max_steps(self, gen) -> int:
        cap = self.config.limits.max_steps
        return min(gen.max_steps, cap) if cap else gen.max_steps

    def default_steps(self, gen) -> int:
        """The model's default, lowered to the server's cap when the cap is below it."""
        return min(gen.defaults.steps, self.max_steps(gen))

    def model_card(self, name: str, gen) -> dict:
        d = gen.defaults
        endpoints = served_keys(getattr(gen, "supports", ()), getattr(gen, "requires", ()))
        return {"id": name, "object": "model", "created": self.started, "owned_by": "blinkgen",
                "family": gen.family, "sizes": [f"{gen.image_size}x{gen.image_size}"],
                "samplers": list(gen.samplers), "max_steps": self.max_steps(gen),
                "max_guidance": float(getattr(gen, "max_guidance", 30.0)),
                "defaults": {"steps": self.default_steps(gen), "guidance": d.guidance, "sampler": d.sampler,
                             "style": getattr(d, "style", None)},  # the page compares a replayed PNG's style
                "styles": list(getattr(gen, "styles", ())),  # empty: any style phrase (if `style` is listed)
                # the optional request keys this model takes, and the endpoints that take each
                "supports": list(endpoints), "endpoints": endpoints,
                "model_hash": getattr(gen, "model_hash", None)}

    def make_job(self, req: ImageFields, owner: str | None = None, linked: bool = False,
                 edit: dict | None = None, base_url: str = "") -> Job:
        """Validate a request against the server's limits and the model; UserError if it is bad.
        `owner` is the owner_id of the caller's key (None on a server without keys). `linked`:
        its images get url links (and a place in the link store) even if the response is b64 --
        jobs do, because their event stream always links. `edit` (serve/edits.py): the decoded
        init_image, mask, strength and revised_prompt of an edit or variation."""
        validate_limits(req, self.config.limits)
        name = req.model or self.default_model()
        gen = self.generators.get(name)
        if gen is None or name in self.batcher.unloading:  # names only: nothing in a request can point at a file
            raise UserError(f"model {name!r} is not loaded; available: {', '.join(self.generators)}",
                            param="model", code="model_not_found")
        sizes = [f"{gen.image_size}x{gen.image_size}"]
        if req.size is not None and req.size != "auto" and req.size not in sizes:  # auto: the model's size
            raise UserError(f"size {req.size!r} is not supported by {name}; supported sizes: "
                            f"{', '.join(sizes)} or auto", param="size", code="invalid_size")
        if req.steps is not None and req.steps > self.max_steps(gen):
            raise UserError(f"steps must be between 1 and {self.max_steps(gen)}", param="steps", code="invalid_steps")
        check_edit(name, gen, edit)
        steps = req.steps if req.steps is not None else self.default_steps(gen)
        extra = {}
        style = resolve_style(name, gen, req.style)
        if style is not None:
            extra["style"] = style
        if req.cache is not None:
            refuse_unserved(name, gen, "cache")
            extra["cache"] = req.cache
        if req.negative_prompt is not None:
            extra["negative_prompt"] = req.negative_prompt
        try:
            settings = gen.settings(steps=steps, guidance=req.guidance, sampler=req.sampler, **extra)
        except (UserInputError, ValueError) as e:
            msg = str(e)
            param = next((p for p in ("negative_prompt", "sampler", "steps", "guidance", "style", "cache")
                          if p in msg.lower()), None)
            raise UserError(msg, param=param, code="invalid_settings") from None
        try:  # the one seed rule (blinkgen.seeds): seed, seed+1, ...; past 2^63 - 1 is refused
            seeds = seed_run(req.seed if req.seed is not None else random_seed(), req.n)
        except UserInputError as e:
            raise UserError(str(e), param="seed", code="invalid_seed") from None
        variation_seeds = variation_run(name, gen, req)
        webhook = None
        if req.webhook_url is not None:
            from .webhooks import Webhook, check_url

            if not linked:
                raise UserError("webhook_url is for POST /v1/jobs (this call answers when the images are "
                                "ready)", param="webhook_url", code="invalid_webhook_url")
            if self.webhooks is None:
                raise UserError("webhooks are off on this server (it was started without "
                                "--webhook-secret-file)", param="webhook_url", code="webhooks_disabled")
            webhook = Webhook(check_url(req.webhook_url, self.config.webhook_hosts), base_url)
        return Job(id=self.store.new_id(), model=name, prompt=req.prompt, seeds=seeds, settings=settings,
                   response_format=req.response_format, owner=owner, size=sizes[0],
                   linked=linked or req.response_format == "url",
                   deadline=time.monotonic() + self.config.timeout_s,
                   priority=req.priority or 0, webhook=webhook, variation_seeds=variation_seeds,
                   variation_strength=getattr(req, "variation_strength", None) if variation_seeds else None,
                   **(edit or {}))

    def caption(self, image) -> str:
        """The image's best caption among the evaluator's (eval/caption.py): the prompt of a
        variation sent without one. The evaluator is loaded on first use."""
        from ..eval.caption import caption
        from ..eval.contrastive import load_evaluator

        with self._caption_lock:
            if self._evaluator is None:
                self._evaluator = load_evaluator()
        return caption(image, top_k=1, evaluator=self._evaluator)[0][0]

    def expire_if_late(self, job: Job) -> None:
        if job.alive and time.monotonic() > job.deadline:
            with self.batcher.cond:
                self.store.finish(job, "failed", {"message": "request timed out", "type": "timeout_error",
                                                  "param": None, "code": "timeout"})
                self.batcher.cond.notify_all()


def refuse_unserved(name: str, gen, key: str) -> None:
    """400 for an optional key this model's card does not list (it takes no such setting)."""
    served = served_keys(getattr(gen, "supports", ()), getattr(gen, "requires", ()))
    if key not in served:
        raise UserError(f"model {name!r} ({gen.family}) does not take {key}; it takes "
                        f"{', '.join(served) or 'none of the optional keys'} (see /v1/models)",
                        param=key, code="unsupported_value")


def resolve_style(name: str, gen, style: str | None) -> str | None:
    """The `style` key, where OpenAI and blinkgen collide -> the style setting to pass the model
    (None: the model's default). OpenAI's hints (dall-e-3's "vivid"/"natural") are accepted no-ops
    unless the model has a style of that name; any other string is blinkgen's style phrase, which
    the model must take and, when it lists its styles, know ("none" or "": no phrase, which any
    model grants). A 400 for anything else lists both kinds."""
    if style is None:
        return None
    styles, takes_style = tuple(getattr(gen, "styles", ())), "style" in getattr(gen, "supports", ())
    if (style in STYLE_HINTS and style not in styles) or (style in NO_STYLE and not takes_style):
        return None  # a no-op hint, or "no style" from a model that draws none
    hints = f"OpenAI's hints {' and '.join(STYLE_HINTS)} are accepted and ignored"
    if not takes_style:
        raise UserError(f"style {style!r}: model {name!r} ({gen.family}) takes no style phrase; {hints}",
                        param="style", code="unsupported_value")
    if styles and style not in styles and style not in NO_STYLE:
        raise UserError(f"unknown style {style!r} for model {name!r}; its styles: {', '.join(styles)} "
                        f"(or 'none' for no style phrase); {hints}", param="style", code="invalid_style")
    return style


def variation_run(name: str, gen, req) -> list[int] | None:
    """The per-image variation seeds of a request (variation_seed, +1, ... as the CLI's -n does),
    or None without one; both keys or neither, as in the CLI and `blinkgen.Request`."""
    vseed, vstrength = getattr(req, "variation_seed", None), getattr(req, "variation_strength", None)
    if vseed is None and vstrength is None:
        return None
    refuse_unserved(name, gen, "variation_seed")
    if vseed is None or vstrength is None:
        missing = "variation_seed" if vseed is None else "variation_strength"
        raise UserError(f"variation_seed and variation_strength go together: {missing} is missing",
                        param=missing, code="invalid_variation")
    try:
        return seed_run(vseed, req.n)
    except UserInputError as e:
        raise UserError(f"variation_seed: {e}", param="variation_seed", code="invalid_seed") from None
