"""Models loaded and unloaded while serving: `POST /v1/models/load` and `DELETE /v1/models/{id}`.

Who may: only callers with an admin key (`Authorization: Bearer <admin key>`), from
`--admin-key-file` (one key per line, `#` comments) and $BLINKGEN_ADMIN_KEYS (comma-separated).
A server started without admin keys has no model management (403 `admin_disabled`); an admin
key is not an API key for generation unless it is also listed there.

Load: `{"model": "<embedded name or model folder>", "id": "<optional served name>"}` -> 201 and
the model card. The folder is read with the same loader as `blinkgen serve --model` (safetensors
and JSON only: nothing is executed) in a worker thread, so the event loop and the running batches
go on meanwhile; it is warmed up (one tiny call) before it is listed, when the server warms up.

Unload: the model leaves /v1/models and refuses new requests at once (`model_not_found`, "being
unloaded"); every job already accepted for it -- queued or running -- still finishes; then the
model is dropped and the answer is `{"id", "object": "model", "deleted": true, "finished_jobs"}`.
The last loaded model cannot be unloaded (409), so the server always has a default model.
"""
from __future__ import annotations

import asyncio
import logging
import os
import time

from fastapi import Request  # module level: with postponed annotations FastAPI resolves the
from pydantic import BaseModel, ConfigDict, Field  # routes' `request: Request` in these globals

from .limits import bearer_token
from .schemas import ErrorResponse, UserError

# every status the admin routes answer with, so the OpenAPI schema (and fuzzers) know them
ADMIN_ERRORS = {c: {"model": ErrorResponse} for c in (400, 401, 403, 404, 409, 413, 429)}

log = logging.getLogger(__name__)
ENV_ADMIN_KEYS = "BLINKGEN_ADMIN_KEYS"
DRAIN_POLL_S = 0.05


class LoadRequest(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    model: str = Field(min_length=1, max_length=4096, description="An embedded model name or a model folder on "
                                                                 "the server's disk.")
    id: str | None = Field(None, min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9._@:-]*$",
                           description="The name to serve it as (default: the model's own name).")


def load_admin_keys(path=None, env=None) -> frozenset[str]:
    """Admin keys from a file (one per line, `#` comments) and $BLINKGEN_ADMIN_KEYS."""
    from .limits import load_api_keys

    env = os.environ if env is None else env
    return load_api_keys(path, {"BLINKGEN_API_KEYS": env.get(ENV_ADMIN_KEYS, "")})


def add_routes(app, svc) -> None:
    """Register the admin routes on the app (create_app calls this)."""
    from fastapi.responses import JSONResponse

    def admin(request: Request) -> None:
        keys = svc.config.admin_keys
        if not keys:
            raise UserError("model management is disabled on this server: start it with --admin-key-file",
                            code="admin_disabled", status=403, type="permission_error")
        from .limits import key_ok

        if not key_ok(keys, request.headers.get("authorization")):
            raise UserError("this needs an admin key (Authorization: Bearer <admin key>)",
                            code="invalid_admin_key", status=401 if bearer_token(
                                request.headers.get("authorization")) is None else 403,
                            type="authentication_error", headers={"WWW-Authenticate": "Bearer"})

    @app.post("/v1/models/load", status_code=201, summary="Load a model while serving (admin key).",
              tags=["admin"], responses=ADMIN_ERRORS)
    async def load_model(body: LoadRequest, request: Request):
        admin(request)
        import blinkgen
        from ..errors import BlinkgenError

        try:
            gen = await asyncio.to_thread(blinkgen.load, body.model, svc.device, svc.dtype)
            if svc.config.warmup:
                from ..pipeline import Request as GenRequest

                await asyncio.to_thread(gen.sample, [GenRequest("warm-up", 0)], gen.settings())
        except BlinkgenError as e:
            raise UserError(f"cannot load {body.model!r}: {e}", param="model", code="model_load_failed") from None
        name = body.id or gen.name
        with svc.batcher.cond:
            if name in svc.generators:
                raise UserError(f"a model named {name!r} is already loaded; unload it first or pass another id",
                                param="id", code="model_exists", status=409)
            svc.generators[name] = gen
        app.openapi_schema = None  # the request schema lists the loaded models
        log.info("loaded %s as %s", body.model, name)
        return JSONResponse(svc.model_card(name, gen), status_code=201)

    @app.delete("/v1/models/{model_id}", summary="Unload a model after its in-flight jobs (admin key).",
                tags=["admin"], responses=ADMIN_ERRORS)
    async def unload_model(model_id: str, request: Request):
        admin(request)
        b = svc.batcher
        with b.cond:
            if model_id not in svc.generators or model_id in b.unloading:
                raise UserError(f"no model {model_id!r} is loaded", param="id", code="model_not_found", status=404)
            if len([m for m in svc.generators if m not in b.unloading]) == 1:
                raise UserError(f"{model_id!r} is the only model loaded; load another before unloading it",
                                param="id", code="last_model", status=409)
            b.unloading.add(model_id)
        app.openapi_schema = None
        t0, waited = time.monotonic(), b.in_flight(model_id)
        # the drain runs in its own task: a client that hangs up does not leave a half-unloaded model
        finished = await asyncio.shield(asyncio.ensure_future(_drain(svc, model_id)))
        log.info("unloaded %s after %d in-flight job(s), %.1f s", model_id, waited, time.monotonic() - t0)
        return {"id": model_id, "object": "model", "deleted": True, "finished_jobs": finished}


async def _drain(svc, model_id: str) -> int:
    """Wait until no accepted job of `model_id` is queued or running, then drop the model.
    Returns how many jobs were in flight when the unload began (each has finished since)."""
    b = svc.batcher
    first = b.in_flight(model_id)
    while b.in_flight(model_id):
        await asyncio.sleep(DRAIN_POLL_S)
    with b.cond:
        svc.generators.pop(model_id, None)
        b.unloading.discard(model_id)
        b.cond.notify_all()
    return first
