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
import time
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from .edits import add_edit_routes, upload_limits
from .jobs import Job, Watch, image_datum, owner_id, snapshot, visible_to
from .limits import BodyLimit, RequestMetrics, bearer_token, key_ok
from .schemas import ErrorResponse, ImageRequest, ImagesResponse, JobResponse, ModelList, UserError, refine_openapi
from .service import ServeConfig, Service

__all__ = ["ServeConfig", "Service", "create_app"]

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"
SSE_REFRESH_S = 1.0  # queue positions change without the job changing: re-check this often
SSE_KEEPALIVE_S = 15.0  # a comment line so proxies do not close an idle stream
JOB_ERROR_STATUS = {"timeout": 504, "shutting_down": 503, "model_unavailable": 503,
                    "invalid_settings": 400, "generation_failed": 500, "superseded": 409}


def _openai_error(status: int, message: str, type: str, code: str | None = None,
                  param: str | None = None, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": type, "param": param, "code": code}},
                        status_code=status, headers=headers)


# the `code` of errors raised by the framework itself (routing, body parsing), by status
HTTP_CODES = {400: "invalid_request", 404: "not_found", 405: "method_not_allowed", 413: "body_too_large",
              415: "unsupported_media_type"}


def _http_error(exc: StarletteHTTPException) -> tuple[str, str]:
    """(message, code) of an error the framework raised; every one gets a code, as ours do."""
    if exc.status_code == 400 and isinstance(exc.__cause__, UnicodeDecodeError):  # FastAPI's body parser
        return "request body is not valid JSON: it must be UTF-8 text", "invalid_json"
    if exc.status_code == 400 and isinstance(exc.__cause__, RecursionError):
        return "request body is nested too deeply to parse as JSON", "invalid_json"
    return str(exc.detail), HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")


JSON_KINDS = {list: "an array", str: "a string", int: "a number", float: "a number", bool: "a boolean"}


def _validation_message(exc: RequestValidationError, content_type: str | None = None) -> tuple[str, str | None]:
    errs = exc.errors()
    if not errs:
        return "invalid request", None
    e = errs[0]
    loc = [str(p) for p in e.get("loc", ()) if p != "body"]
    if e.get("type") == "json_invalid":
        return "request body is not valid JSON", None
    if e.get("type") == "missing" and not loc:
        return "request body is required (JSON object)", None
    if not loc and e.get("type") in ("model_attributes_type", "dict_type", "model_type"):
        ct = (content_type or "").split(";")[0].strip().lower()
        if ct != "application/json":  # FastAPI reads a body as JSON only when the header says so
            return (f"request body must be a JSON object sent with Content-Type: application/json "
                    f"(got Content-Type: {ct or 'none'})"), None
        return f"request body must be a JSON object, not {JSON_KINDS.get(type(e.get('input')), 'that')}", None
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
        msg, param = _validation_message(exc, request.headers.get("content-type"))
        code = "invalid_json" if exc.errors() and exc.errors()[0].get("type") == "json_invalid" else "invalid_value"
        return _openai_error(400, msg, "invalid_request_error", code, param)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request, exc: StarletteHTTPException):
        msg, code = _http_error(exc)
        return _openai_error(exc.status_code, msg, "invalid_request_error", code, headers=exc.headers)

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
