"""The HTTP surface: OpenAI-compatible images API, jobs with progress and SSE, health, metrics,
and the web page. Handlers only validate, enqueue and wait; generation happens in the batcher's
worker thread, so the event loop never runs a model step.

Error policy: every non-2xx body is OpenAI's `{"error": {message, type, param, code}}`; anything
the client can fix is a 4xx (validation is 400, not FastAPI's 422, as OpenAI does); a 5xx means a
bug, a failed model call, a timeout (504) or a shutdown (503).

Isolation: with API keys, each job records the sha256 of the key that created it (never the key)
and is visible only to that key: another key gets the same 404 as for an unknown id, so ids
cannot be probed. Image links (`response_format="url"`, SSE results) are bearer-less capability
URLs -- see `jobs.ImageStore`. Without keys everyone sees every job, as before.
"""
from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections import OrderedDict
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import UserInputError
from .batcher import Batcher
from .edits import add_edit_routes, check_edit, upload_limits
from .jobs import Job, JobStore, Watch, image_datum, owner_id, snapshot, visible_to
from .limits import BodyLimit, RequestMetrics, bearer_token, key_ok
from .metrics import Metrics
from ..seeds import random_seed, seed_run
from .schemas import (ErrorResponse, ImageRequest, ImagesResponse, JobResponse, Limits, ModelList,
                      UserError, refine_openapi, validate_limits)

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"
SSE_REFRESH_S = 1.0  # queue positions change without the job changing: re-check this often
SSE_KEEPALIVE_S = 15.0  # a comment line so proxies do not close an idle stream
JOB_ERROR_STATUS = {"timeout": 504, "shutting_down": 503, "model_unavailable": 503,
                    "invalid_settings": 400, "generation_failed": 500, "superseded": 409}
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
        return {"id": name, "object": "model", "created": self.started, "owned_by": "blinkgen",
                "family": gen.family, "sizes": [f"{gen.image_size}x{gen.image_size}"],
                "samplers": list(gen.samplers), "max_steps": self.max_steps(gen),
                "max_guidance": float(getattr(gen, "max_guidance", 30.0)),
                "defaults": {"steps": self.default_steps(gen), "guidance": d.guidance, "sampler": d.sampler,
                             "style": getattr(d, "style", None)},  # the page compares a replayed PNG's style
                "supports": sorted(getattr(gen, "supports", ())), "model_hash": getattr(gen, "model_hash", None)}

    def make_job(self, req: ImageRequest, owner: str | None = None, linked: bool = False,
                 edit: dict | None = None, base_url: str = "") -> Job:
        """Validate a request against the server's limits and the model; UserError if it is bad.
        `owner` is the owner_id of the caller's key (None on a server without keys). `linked`:
        its images get url links (and a place in the link store) even if the response is b64 --
        jobs do, because their event stream always links. `edit` (serve/edits.py): the decoded
        init_image, mask, strength, style and revised_prompt of an edit or variation."""
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
        extra = {"style": edit["style"]} if edit and edit.get("style") is not None else {}
        if req.negative_prompt is not None:
            extra["negative_prompt"] = req.negative_prompt
        try:
            settings = gen.settings(steps=steps, guidance=req.guidance, sampler=req.sampler, **extra)
        except (UserInputError, ValueError) as e:
            msg = str(e)
            param = next((p for p in ("negative_prompt", "sampler", "steps", "guidance", "style") if p in msg.lower()), None)
            raise UserError(msg, param=param, code="invalid_settings") from None
        try:  # the one seed rule (blinkgen.seeds): seed, seed+1, ...; past 2^63 - 1 is refused
            seeds = seed_run(req.seed if req.seed is not None else random_seed(), req.n)
        except UserInputError as e:
            raise UserError(str(e), param="seed", code="invalid_seed") from None
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
                   priority=req.priority or 0, webhook=webhook,
                   **{k: v for k, v in (edit or {}).items() if k != "style"})

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


def _openai_error(status: int, message: str, type: str, code: str | None = None,
                  param: str | None = None, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": type, "param": param, "code": code}},
                        status_code=status, headers=headers)


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    errs = exc.errors()
    if not errs:
        return "invalid request", None
    e = errs[0]
    loc = [str(p) for p in e.get("loc", ()) if p != "body"]
    if e.get("type") == "json_invalid":
        return "request body is not valid JSON", None
    if e.get("type") == "missing" and not loc:
        return "request body is required (JSON object)", None
    param = ".".join(loc) or None
    if e.get("type") == "extra_forbidden":
        return f"unknown parameter {param!r}", param
    return (f"{param}: {e.get('msg')}" if param else str(e.get("msg"))), param


ERRORS = {400: {"model": ErrorResponse}, 401: {"model": ErrorResponse}, 404: {"model": ErrorResponse},
          413: {"model": ErrorResponse}, 429: {"model": ErrorResponse}, 503: {"model": ErrorResponse},
          504: {"model": ErrorResponse}}


def create_app(generators: dict, config: ServeConfig | None = None) -> FastAPI:
    svc = Service(generators, config or ServeConfig())

    @asynccontextmanager
    async def lifespan(app):
        svc.batcher.start()
        yield
        svc.batcher.begin_shutdown(svc.config.shutdown_grace_s)
        await asyncio.to_thread(svc.batcher.join, svc.config.shutdown_grace_s + 10)
        if svc.webhooks is not None:  # deliveries of the last jobs, briefly
            await asyncio.to_thread(svc.webhooks.close, 5.0)

    app = FastAPI(title="blinkgen", version=__import__("blinkgen").__version__, lifespan=lifespan,
                  description="OpenAI-compatible images API with jobs, progress and dynamic batching.")
    app.state.service = svc
    base_openapi = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            cards = [svc.model_card(n, g) for n, g in svc.generators.items()]
            app.openapi_schema = refine_openapi(base_openapi(), cards, svc.config.limits)
        return app.openapi_schema

    app.openapi = openapi
    bearer = HTTPBearer(auto_error=False, description="Required when the server has API keys.")

    def auth(request: Request, _: HTTPAuthorizationCredentials | None = Depends(bearer)) -> str | None:
        """401 unless the key is valid; returns the caller's owner id (None without keys)."""
        if not key_ok(svc.config.api_keys, request.headers.get("authorization")):
            raise UserError("missing or invalid API key (Authorization: Bearer <key>)",
                            code="invalid_api_key", status=401, type="authentication_error",
                            headers={"WWW-Authenticate": "Bearer"})
        if not svc.config.api_keys:
            return None
        return owner_id(bearer_token(request.headers.get("authorization")))  # the key key_ok matched

    @app.exception_handler(UserError)
    async def _user_error(request, exc: UserError):
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request, exc: RequestValidationError):
        msg, param = _validation_message(exc)
        return _openai_error(400, msg, "invalid_request_error", "invalid_value", param)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request, exc: StarletteHTTPException):
        return _openai_error(exc.status_code, str(exc.detail), "invalid_request_error",
                             "not_found" if exc.status_code == 404 else None, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _bug(request, exc: Exception):
        log.exception("unhandled error")
        return _openai_error(500, "internal server error", "server_error", "internal_error")

    def job_or_404(job_id: str, owner: str | None) -> Job:
        """The caller's job; someone else's is exactly as absent as one that never existed."""
        job = svc.store.get(job_id)
        if job is None or not visible_to(job, owner):
            raise UserError(f"no job {job_id!r}", param="id", code="job_not_found", status=404)
        return job

    def job_json(job: Job, request: Request, fmt: str | None = None) -> dict:
        pos = svc.batcher.queue_position(job)
        with svc.store.lock:
            out = snapshot(job, str(request.base_url), pos, with_images=fmt is None)
            if fmt:  # e.g. SSE always links (small events) whatever the job's response_format
                out["data"] = [image_datum(r, fmt, str(request.base_url), job.prompt, job.revised_prompt)
                               for r in job.results if r is not None]
            out["preview"] = job.preview
            return out

    # ---- meta ----------------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    async def index():
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/health", summary="Liveness: the process answers.")
    async def health():
        return {"status": "ok"}

    @app.get("/ready", summary="Readiness: models loaded and warmed up, not shutting down.",
             responses={503: {"model": ErrorResponse}})
    async def ready():
        b = svc.batcher
        if b.ready.is_set() and not b.closing:
            return {"ready": True, "models": list(svc.generators)}
        why = b.warmup_error or ("shutting down" if b.closing else "warming up")
        return _openai_error(503, f"not ready: {why}", "server_unavailable", "not_ready")

    @app.get("/metrics", response_class=PlainTextResponse, summary="Prometheus metrics.")
    async def metrics():
        return PlainTextResponse(svc.metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models", response_model=ModelList, dependencies=[Depends(auth)], responses=ERRORS)
    async def models():
        with svc.batcher.cond:
            listed = [(n, g) for n, g in svc.generators.items() if n not in svc.batcher.unloading]
        return {"object": "list", "data": [svc.model_card(n, g) for n, g in listed]}

    # ---- images --------------------------------------------------------------------------
    async def wait_and_answer(job: Job, request: Request):
        """Wait for a submitted job; its images (OpenAI shape) or its error."""
        async with Watch(job, svc.store.lock) as w:
            while job.alive:
                svc.expire_if_late(job)
                if await request.is_disconnected():
                    svc.batcher.cancel(job)  # nobody is waiting for these images any more
                    return Response(status_code=499)
                await w.wait(min(0.5, max(0.01, job.deadline - time.monotonic())))
        if job.state != "done":
            err = job.error or {"message": f"job {job.state}", "type": "server_error", "param": None, "code": job.state}
            return JSONResponse({"error": err}, status_code=JOB_ERROR_STATUS.get(err.get("code"), 500))
        base = str(request.base_url)
        return {"created": job.created, "data": [image_datum(r, job.response_format, base, job.prompt, job.revised_prompt)
                                                 for r in job.results],
                "output_format": "png", "background": "opaque", "size": job.size}

    @app.post("/v1/images/generations", response_model=ImagesResponse,
              responses=ERRORS, summary="Generate images and wait for them (OpenAI-compatible).")
    async def generations(req: ImageRequest, request: Request, owner: str | None = Depends(auth)):
        job = svc.make_job(req, owner)
        svc.batcher.submit(job)
        svc.supersede(job, req.supersede, owner)
        try:
            return await wait_and_answer(job, request)
        finally:
            svc.store.discard(job)  # answered (or abandoned): nobody holds its id, keep nothing

    @app.get("/images/{token}.png", include_in_schema=False)
    async def image(token: str):
        """No API key here on purpose: the unguessable token is the capability (jobs.ImageStore)."""
        png = svc.store.images.get(token)
        if png is None:
            raise UserError("image not found or its link expired", code="not_found", status=404)
        return Response(png, media_type="image/png",
                        headers={"Cache-Control": f"private, max-age={int(svc.config.url_ttl_s)}"})

    # ---- jobs ----------------------------------------------------------------------------
    @app.post("/v1/jobs", status_code=202, response_model=JobResponse,
              responses=ERRORS, summary="Queue an image job; poll it or stream its events.")
    async def create_job(req: ImageRequest, request: Request, owner: str | None = Depends(auth)):
        job = svc.make_job(req, owner, linked=True, base_url=str(request.base_url))  # its event stream shows url links
        svc.batcher.submit(job)
        svc.supersede(job, req.supersede, owner)
        return JSONResponse(job_json(job, request), status_code=202,
                            headers={"Location": f"/v1/jobs/{job.id}"})

    @app.get("/v1/jobs/{job_id}", response_model=JobResponse, responses=ERRORS)
    async def get_job(job_id: str, request: Request, owner: str | None = Depends(auth)):
        job = job_or_404(job_id, owner)
        svc.expire_if_late(job)
        return JSONResponse(job_json(job, request))

    @app.delete("/v1/jobs/{job_id}", response_model=JobResponse,
                responses={**ERRORS, 409: {"model": ErrorResponse}}, summary="Cancel a job.")
    async def cancel_job(job_id: str, request: Request, owner: str | None = Depends(auth)):
        job = job_or_404(job_id, owner)
        if not svc.batcher.cancel(job) and job.state != "cancelled":
            raise UserError(f"job {job_id} is already {job.state}", param="id", code="job_finished", status=409)
        return JSONResponse(job_json(job, request))

    @app.get("/v1/jobs/{job_id}/events", responses=ERRORS,
             response_class=StreamingResponse, summary="Server-Sent Events: progress, previews, result.")
    async def job_events(job_id: str, request: Request, owner: str | None = Depends(auth)):
        job = job_or_404(job_id, owner)

        async def stream():
            last, quiet = None, 0.0
            async with Watch(job, svc.store.lock) as w:
                while True:
                    svc.expire_if_late(job)
                    data = json.dumps(job_json(job, request, fmt="url"))
                    final = not job.alive
                    if data != last:
                        event = job.state if final else "progress"
                        yield f"event: {event}\ndata: {data}\n\n"
                        last, quiet = data, 0.0
                    if final:
                        return
                    if not await w.wait(SSE_REFRESH_S):
                        quiet += SSE_REFRESH_S
                        if quiet >= SSE_KEEPALIVE_S:
                            yield ": keep-alive\n\n"
                            quiet = 0.0

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    add_edit_routes(app, svc, auth, wait_and_answer, job_json, ERRORS)
    from . import admin

    admin.add_routes(app, svc)  # POST /v1/models/load, DELETE /v1/models/{id} (admin keys)
    app.add_middleware(BodyLimit, max_bytes=svc.config.max_body_bytes, paths=upload_limits(svc.config))
    app.add_middleware(RequestMetrics, metrics=svc.metrics)  # outermost: counts 413s too
    return app
