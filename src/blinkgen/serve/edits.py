"""Images in over HTTP: `POST /v1/images/edits` and `POST /v1/images/variations` in OpenAI's
multipart shapes (what `client.images.edit` and `client.images.create_variation` send: the file
`image` -- or one `image[]` --, an optional file `mask`, and text fields), and
`POST /v1/jobs/edits`: the same form answered at once with a job whose progress streams at
`/v1/jobs/{id}/events` (the web page uses it).

Every upload goes through the one image reader (data/image_io.py): `read_image` for the image,
`read_mask` for the mask (OpenAI's convention: its transparent pixels mark what to repaint; a mask
without transparency: white = repaint). Limits and errors are the generations' ones: a body over
the upload cap is a 413 before anything parses it (limits.BodyLimit, per path), an image file over
`max_upload_bytes` is a 413, an image that is unreadable, not a picture format, larger than
`max_upload_side` a side or not square is a 400 naming the field, and so is a mask of another size.
A variation without a prompt is steered towards the image's best caption (eval/caption.py), which
the answer reports as `revised_prompt`.
"""
from __future__ import annotations

import asyncio
import re

from fastapi import Depends, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from ..errors import ImageReadError
from .schemas import EditRequest, UserError, VariationRequest

IMAGE_FIELDS = ("image", "image[]")
FILE_FIELDS = (*IMAGE_FIELDS, "mask", "markup")
INT_FIELDS = frozenset({"n", "seed", "steps", "priority", "partial_images", "output_compression", "frame_count", "frame_duration_ms"})
FLOAT_FIELDS = frozenset({"guidance", "strength"})
BOOL_FIELDS = frozenset({"stream"})
_INT = re.compile(r"^[+-]?\d+$")
_FLOAT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
PATHS = ("/v1/images/edits", "/v1/images/variations", "/v1/jobs/edits")


def upload_limits(config) -> dict[str, int]:
    """Body caps for the upload paths: an image and a mask at the upload cap, plus the text
    fields and multipart framing (the JSON cap)."""
    return {p: 2 * config.max_upload_bytes + config.max_body_bytes for p in PATHS}


def check_edit(name: str, gen, edit: dict | None) -> None:
    """UserError unless the model can take this request: a model that needs an image (an
    upscaler) refuses a plain generation; an edit needs a model that takes init images (and a
    mask, when one is sent)."""
    if edit is None:
        if "init_image" in getattr(gen, "requires", ()):
            raise UserError(f"model {name!r} ({gen.family}) needs an image: use POST /v1/images/edits",
                            param="model", code="model_needs_image")
        return
    if "init_image" not in gen.supports:
        raise UserError(f"model {name!r} ({gen.family}) does not edit images", param="model", code="model_cannot_edit")
    for field in ("mask", "strength"):
        if edit.get(field) is not None and field not in gen.supports:
            raise UserError(f"model {name!r} ({gen.family}) does not take a {field}", param=field,
                            code="unsupported_value")


def _text_fields(form) -> dict:
    """Multipart text fields -> typed values for the strict request model (ints and floats
    parsed from their decimal text, booleans from true/false; anything else is left as text and
    refused by the model with a 400 naming the field)."""
    out = {}
    for key, value in form.multi_items():
        if key in FILE_FIELDS:
            continue
        if not isinstance(value, str):
            raise UserError(f"{key} must be a text field, not a file", param=key, code="invalid_value")
        if key in out:
            raise UserError(f"{key} is given twice", param=key, code="invalid_value")
        v = value.strip()
        if key in INT_FIELDS and _INT.match(v):
            value = int(v)
        elif key in FLOAT_FIELDS and _FLOAT.match(v):
            value = float(v)
        elif key in BOOL_FIELDS and v.lower() in ("true", "false"):
            value = v.lower() == "true"
        out[key] = value
    return out


def _validation_error(e: ValidationError) -> UserError:
    err = e.errors()[0]
    loc = ".".join(str(p) for p in err.get("loc", ()))
    if err.get("type") == "extra_forbidden":
        return UserError(f"unknown parameter {loc!r}", param=loc, code="invalid_value")
    return UserError(f"{loc}: {err.get('msg')}" if loc else str(err.get("msg")), param=loc or None, code="invalid_value")


async def _upload(form, names: tuple[str, ...], required: bool, label: str, cap: int) -> bytes | None:
    files = [v for k, v in form.multi_items() if k in names]
    if not files:
        if required:
            raise UserError(f"{label} is required: a multipart/form-data file field named {label!r}",
                            param=label, code="missing_image")
        return None
    if len(files) > 1:
        raise UserError(f"one {label} per request, got {len(files)}", param=label, code="invalid_value")
    f = files[0]
    if isinstance(f, str):
        raise UserError(f"{label} must be a file (multipart/form-data), not a text field", param=label,
                        code="invalid_image")
    data = await f.read(cap + 1)
    if len(data) > cap:
        raise UserError(f"{label} is over {cap} bytes", param=label, code="file_too_large", status=413)
    return data


def _decode(data: bytes, label: str, config, mask: bool = False):
    """Through the one reader: the image as RGB, the mask as "L" (255 = repaint)."""
    from ..data import image_io

    read = image_io.read_mask if mask else image_io.read_image
    try:
        im = read(data, name=label, max_bytes=config.max_upload_bytes, max_side=config.max_upload_side,
                  max_pixels=config.max_upload_side ** 2)
    except ImageReadError as e:
        status = 413 if e.reason == image_io.TOO_MANY_BYTES else 400
        raise UserError(str(e), param=label, code="invalid_image", status=status) from None
    if not mask and im.size[0] != im.size[1]:
        raise UserError(f"{label} must be square, got {im.size[0]}x{im.size[1]}", param=label, code="invalid_image")
    return im


async def edit_job(request: Request, svc, owner: str | None, variation: bool, linked: bool = False):
    """Parse, read and validate one edits/variations form -> a submitted Job (UserError if bad)."""
    form = await request.form(max_files=4, max_fields=64, max_part_size=64 * 1024)
    model_cls = VariationRequest if variation else EditRequest
    try:
        req = model_cls.model_validate(_text_fields(form))
    except ValidationError as e:
        raise _validation_error(e) from None
    cfg = svc.config
    if form.get("markup") is not None:
        raise UserError("markup is not supported: send the image and a mask", param="markup", code="unsupported_value")
    image_bytes = await _upload(form, IMAGE_FIELDS, True, "image", cfg.max_upload_bytes)
    mask_bytes = None if variation else await _upload(form, ("mask",), False, "mask", cfg.max_upload_bytes)
    image = await asyncio.to_thread(_decode, image_bytes, "image", cfg)
    mask = None
    if mask_bytes is not None:
        mask = await asyncio.to_thread(_decode, mask_bytes, "mask", cfg, True)
        if mask.size != image.size:
            raise UserError(f"mask is {mask.size[0]}x{mask.size[1]} but image is {image.size[0]}x{image.size[1]}; "
                            "they must be the same size", param="mask", code="invalid_image")
    revised = None
    if req.prompt is None:  # a variation: the image's own best caption steers it
        revised = await asyncio.to_thread(svc.caption, image)
        req = req.model_copy(update={"prompt": revised})
    job = svc.make_job(req, owner, linked=linked, edit={"init_image": image, "mask": mask, "strength": req.strength,
                                                        "revised_prompt": revised})
    svc.batcher.submit(job)
    return job


def _form_schema(variation: bool) -> dict:
    """OpenAPI request body: the multipart form (files + the request model's text fields)."""
    model_cls = VariationRequest if variation else EditRequest
    schema = model_cls.model_json_schema()
    props = {"image": {"type": "string", "format": "binary", "description": "The square picture to edit (PNG, "
                       "JPEG, WebP, ...); its side at most the server's max_upload_side."},
             **schema.get("properties", {})}
    if not variation:
        props["mask"] = {"type": "string", "format": "binary", "description": "Optional, the image's size: "
                         "transparent pixels (or, without transparency, white ones) are repainted."}
    required = ["image"] + ([] if variation else ["prompt"])
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
        "type": "object", "properties": props, "required": required, "additionalProperties": False}}}}}


def add_edit_routes(app, svc, auth, wait_and_answer, job_json, errors: dict) -> None:
    """Mount the three upload routes on the app (called by serve/app.create_app)."""
    from .schemas import ImagesResponse, JobResponse

    responses = {**errors, 413: errors.get(413, errors[400])}

    async def answer(request: Request, owner, variation: bool):
        job = await edit_job(request, svc, owner, variation)
        try:
            return await wait_and_answer(job, request)
        finally:
            svc.store.discard(job)

    @app.post("/v1/images/edits", response_model=ImagesResponse, responses=responses, openapi_extra=_form_schema(False),
              summary="Edit an image with a prompt: img2img, or inpainting with a mask (OpenAI-compatible).")
    async def edits(request: Request, owner: str | None = Depends(auth)):
        return await answer(request, owner, False)

    @app.post("/v1/images/variations", response_model=ImagesResponse, responses=responses,
              openapi_extra=_form_schema(True), summary="Variations of an image (OpenAI-compatible).")
    async def variations(request: Request, owner: str | None = Depends(auth)):
        return await answer(request, owner, True)

    @app.post("/v1/jobs/edits", status_code=202, response_model=JobResponse, responses=responses,
              openapi_extra=_form_schema(False), summary="Queue an edit (the edits form); poll or stream it.")
    async def create_edit_job(request: Request, owner: str | None = Depends(auth)):
        job = await edit_job(request, svc, owner, False, linked=True)
        return JSONResponse(job_json(job, request), status_code=202, headers={"Location": f"/v1/jobs/{job.id}"})
