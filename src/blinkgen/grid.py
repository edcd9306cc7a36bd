"""Parameter grids: the same prompt and seeds under several values of one or two settings (or
models, or training checkpoints), side by side in one labelled PNG.

    blinkgen grid "a red circle" --x steps=2,4,8,12 --y guidance=1,3,5 -n 2 --score -o grid.png

An axis is `name=v1,v2,...` (CSV: quote a value that holds a comma, `guidance_interval="0,0.5"`).
Names: any setting of the model's family (steps, guidance, sampler, style, negative_prompt,
guidance_interval, ...), the request fields seed, prompt (a template: {a|b}, __name__),
variation_seed and variation_strength, and `model`: embedded names, model folders, or training
checkpoint folders (`runs/x/checkpoints/step-00004000`: its EMA weights in the run's exported
`model/` folder, which supplies the architecture and decoder).

Every cell uses the same seeds (seed, seed+1, ... for -n images), so the cells differ only by
their axis values; cells with equal model and settings are sampled together, which changes no
image (an image never depends on its batch). `--score` adds, per cell, the shipped evaluator's
prompt alignment (mean over the cell's images) or, for prompts of the shapes grammar, the shapes
checker's exact accuracy; the PNG's `parameters` chunk records the axes, labels and scores.
"""
from __future__ import annotations

import csv
import sys
from dataclasses import dataclass, fields
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from .checks import positive_int_arg
from .errors import ModelLoadError, UserInputError

REQUEST_AXES = ("seed", "prompt", "variation_seed", "variation_strength")
ALIASES = {"negative": "negative_prompt", "cfg": "guidance"}
MAX_VALUES = 64  # values per axis
LABEL_PX = 12  # font size of the labels
PAD = 4


@dataclass(frozen=True)
class Axis:
    name: str
    values: tuple[str, ...]  # as typed; converted per model in `cell_kwargs`

    def labels(self) -> list[str]:
        return [_model_label(v) if self.name == "model" else f"{self.name}={v if v else '(none)'}"
                for v in self.values]


def parse_axis(spec: str) -> Axis:
    """"name=v1,v2,..." -> Axis; UserInputError when malformed."""
    name, sep, rest = spec.partition("=")
    name = ALIASES.get(name.strip(), name.strip())
    if not sep or not name or not rest.strip():
        raise UserInputError(f"an axis is NAME=V1,V2,... (e.g. steps=2,4,8), got {spec!r}")
    try:
        (values,) = list(csv.reader([rest], skipinitialspace=True))
    except (csv.Error, ValueError):
        raise UserInputError(f"cannot read the values of axis {spec!r}") from None
    values = tuple(v.strip() for v in values)
    if not values or any(v == "" for v in values) and name not in ("negative_prompt", "style"):
        raise UserInputError(f"axis {name} has an empty value: {spec!r}")
    if len(values) > MAX_VALUES:
        raise UserInputError(f"axis {name} has {len(values)} values; at most {MAX_VALUES}")
    return Axis(name, values)


def _model_label(v: str) -> str:
    p = Path(v)
    if (p / "state.json").is_file():  # a checkpoint: "run@step-00004000"
        return f"{p.parent.parent.name}@{p.name}"
    if p.name == "model" and p.parent.name:  # a run's exported model: name it by its run, "runs/gan/model" -> "gan"
        return p.parent.name
    return p.name or v


def _convert(pipe, name: str, raw: str):
    """A raw axis value typed for this pipeline's settings field (or request field)."""
    if name in ("seed", "variation_seed", "steps"):
        return _int(name, raw)
    if name in ("variation_strength", "guidance"):
        return _float(name, raw)
    if name == "prompt":
        return raw
    types = {f.name: str(f.type) for f in fields(pipe.settings_type)}
    if name not in types:
        known = sorted({*types, *REQUEST_AXES, "model"})
        raise UserInputError(f"unknown grid axis {name!r} for the {pipe.family} family; choose from {', '.join(known)}")
    t = types[name]
    if t.startswith("int"):
        return _int(name, raw)
    if t.startswith("float"):
        return _float(name, raw)
    return raw  # strings and "lo,hi" pairs: the pipeline's settings() parses and checks them


def _int(name, raw):
    try:
        return int(raw)
    except ValueError:
        raise UserInputError(f"{name} values must be integers, got {raw!r}") from None


def _float(name, raw):
    try:
        return float(raw)
    except ValueError:
        raise UserInputError(f"{name} values must be numbers, got {raw!r}") from None


# --- models and checkpoints ---------------------------------------------------------------------
def load_model(value: str, device: str = "cpu", dtype: str = "fp32"):
    """An axis' model value -> a Pipeline: an embedded name, a model folder, or a training
    checkpoint folder (its EMA weights in the run's `model/` folder)."""
    import blinkgen
    from .modelio import load_into, read_tensors

    p = Path(value)
    if not (p / "state.json").is_file():
        return blinkgen.load(value, device=device, dtype=dtype)
    run = p.parent.parent
    template = run / "model"
    if not (template / "config.json").is_file():
        raise ModelLoadError(f"checkpoint {p}: its run {run} has no exported model/ folder to take the "
                             "architecture and decoder from (it is written when training ends)")
    weights = p / "ema.safetensors" if (p / "ema.safetensors").is_file() else p / "model.safetensors"
    pipe = blinkgen.load(str(template), device=device, dtype=dtype)
    module = getattr(pipe, "dit", None) or getattr(pipe, "model", None)
    if module is None:
        raise ModelLoadError(f"checkpoint {p}: the {pipe.family} family does not say which module its "
                             "checkpoints hold")
    load_into(module, read_tensors(weights), str(weights))
    import hashlib

    pipe.name = _model_label(value)
    pipe.model_hash = hashlib.sha256(weights.read_bytes()).hexdigest()
    return pipe


# --- the cells ------------------------------------------------------------------------------------
def cell_kwargs(pipe, axes: list[tuple[Axis, int]]) -> tuple[dict, dict]:
    """(settings keyword arguments, request fields) of one cell, from (axis, value index) pairs."""
    settings, request = {}, {}
    for axis, i in axes:
        if axis.name == "model":
            continue
        v = _convert(pipe, axis.name, axis.values[i])
        (request if axis.name in REQUEST_AXES else settings)[axis.name] = v
    return settings, request


def font(size: int = LABEL_PX):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: the fixed bitmap font
        return ImageFont.load_default()


def labelled_grid(cells: list[list[list[Image.Image]]], col_labels: list[str], row_labels: list[str],
                  title: str = "", notes: list[list[str]] | None = None, scale: int = 1) -> Image.Image:
    """cells[row][col] = that cell's images (laid side by side) -> one RGB image with the column
    labels above, the row labels at the left, an optional title line and a note under each cell
    (e.g. its score)."""
    f = font()
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))

    def text_w(s):
        return int(probe.textlength(s, font=f))

    w0, h0 = cells[0][0][0].size
    k = len(cells[0][0])
    cw, ch = k * w0 * scale + (k - 1) * 2, h0 * scale
    line = LABEL_PX + 4
    cw = max(cw, *(text_w(s) + 2 * PAD for s in col_labels))
    left = max([text_w(s) for s in row_labels] + [0]) + 2 * PAD
    top = line * (2 if title else 1)
    note_h = line if notes else 0
    W, H = left + len(col_labels) * (cw + PAD) + PAD, top + len(row_labels) * (ch + note_h + PAD) + PAD
    g = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(g)
    if title:
        d.text((PAD, 2), title, fill="black", font=f)
    for c, s in enumerate(col_labels):
        d.text((left + c * (cw + PAD) + (cw - text_w(s)) // 2, top - line + 2), s, fill="black", font=f)
    for r, s in enumerate(row_labels):
        y = top + r * (ch + note_h + PAD)
        d.text((PAD, y + (ch - LABEL_PX) // 2), s, fill="black", font=f)
        for c in range(len(col_labels)):
            x = left + c * (cw + PAD)
            for j, im in enumerate(cells[r][c]):
                if scale != 1:
                    im = im.resize((w0 * scale, h0 * scale), Image.NEAREST)
                g.paste(im, (x + j * (w0 * scale + 2), y))
            if notes:
                d.text((x, y + ch + 1), notes[r][c], fill="black", font=f)
    return g


def score_cell(images: list[Image.Image], prompts: list[str]) -> tuple[str, float]:
    """("shapes", overall accuracy) for prompts of the shapes grammar, else ("alignment", the
    shipped evaluator's mean prompt alignment)."""
    from .data import shapes as S

    try:
        for p in prompts:
            S.parse_caption(p)
        shapes = True
    except ValueError:
        shapes = False
    if shapes:
        from .eval.shapes_check import score

        return "shapes", float(score([im.convert("RGB") for im in images], prompts)["overall"])
    from .data.image_io import to_rgb_square
    from .eval import metrics as M
    from .eval.contrastive import load_evaluator

    ev = load_evaluator()
    fake = ev.embed_images([to_rgb_square(im, ev.image_size) for im in images])
    return "alignment", M.alignment(fake, ev.embed_texts(prompts))


def run_grid(prompt: str, x: Axis | None, y: Axis | None, model: str = "default", n: int = 1, seed: int = 0,
             base: dict | None = None, score: bool = False, batch_size: int = 16, device: str = "cpu",
             dtype: str = "fp32", wildcards=None, scale: int | None = None) -> tuple[Image.Image, dict]:
    """Sample every cell and draw the labelled grid -> (image, record for its PNG). base: settings
    keyword arguments shared by every cell (steps, guidance, negative_prompt, ...), which an axis
    overrides. Cells with equal (model, settings) share model calls."""
    from .checks import as_int
    from .pipeline import MAX_N, Request
    from .prompts import resolve
    from .seeds import seed_run

    n = as_int(n, "n", 1, MAX_N)
    seeds = seed_run(seed, n)
    if x is not None and y is not None and x.name == y.name:
        raise UserInputError(f"--x and --y both vary {x.name}")
    xs = [(x, i) for i in range(len(x.values))] if x else [None]
    ys = [(y, i) for i in range(len(y.values))] if y else [None]
    pipes: dict[str, object] = {}

    def pipe_for(model_value):
        if model_value not in pipes:
            pipes[model_value] = load_model(model_value, device, dtype)
        return pipes[model_value]

    plan = []  # (row, col, pipe, settings, requests)
    for r, yv in enumerate(ys):
        for c, xv in enumerate(xs):
            ax = [a for a in (yv, xv) if a is not None]
            mv = next((a.values[i] for a, i in ax if a.name == "model"), model)
            pipe = pipe_for(mv)
            skw, rkw = cell_kwargs(pipe, ax)
            kw = {**(base or {}), **skw}
            settings = pipe.settings(kw.pop("steps", None), kw.pop("guidance", None), kw.pop("sampler", None), **kw)
            template = rkw.get("prompt", prompt)
            cell_seeds = seeds if "seed" not in rkw else seed_run(rkw["seed"], n)
            var = rkw.get("variation_seed"), rkw.get("variation_strength")
            if (var[0] is None) != (var[1] is None):
                raise UserInputError("a variation_strength axis needs --variation-seed, and a variation_seed axis "
                                     "--variation-strength")
            reqs = [Request(resolve(template, s, wildcards), s, variation_seed=var[0], variation_strength=var[1])
                    for s in cell_seeds]
            plan.append((r, c, mv, pipe, settings, reqs))
    out: dict[tuple[int, int], list] = {}
    groups: dict[tuple, list] = {}
    for entry in plan:
        groups.setdefault((entry[2], entry[4]), []).append(entry)
    for (_, settings), entries in groups.items():
        pipe = entries[0][3]
        flat = [(e[0], e[1], q) for e in entries for q in e[5]]
        for i in range(0, len(flat), batch_size):
            chunk = flat[i:i + batch_size]
            ims = pipe.sample([q for _, _, q in chunk], settings).images
            for (r, c, _), im in zip(chunk, ims):
                out.setdefault((r, c), []).append(im)
    cells = [[out[r, c] for c in range(len(xs))] for r in range(len(ys))]
    notes, scores = None, None
    if score:
        scores = [[None] * len(xs) for _ in ys]
        notes = [[""] * len(xs) for _ in ys]
        for r, c, _, _, _, reqs in plan:
            kind, v = score_cell(cells[r][c], [q.prompt for q in reqs])
            scores[r][c] = {kind: round(v, 4)}
            notes[r][c] = f"{kind} {v:.3f}"
    size = cells[0][0][0].size[0]
    scale = scale or max(1, 96 // size)
    col_labels = x.labels() if x else [""]
    row_labels = y.labels() if y else [""]
    title = f"{prompt}  (seed {seed}{f', {n} images' if n > 1 else ''})"
    image = labelled_grid(cells, col_labels, row_labels, title, notes, scale)
    first = plan[0][3]
    record = {"prompt": prompt, "seed": seed, "n": n, "model": first.name,
              "grid": {"x": x.name if x else None, "x_values": list(x.values) if x else [],
                       "y": y.name if y else None, "y_values": list(y.values) if y else [],
                       "x_labels": col_labels if x else [], "y_labels": row_labels if y else [],
                       "cells": len(xs) * len(ys), "base": {k: v for k, v in (base or {}).items() if v is not None},
                       **({"scores": scores} if scores else {})}}
    return image, record


# --- the `blinkgen grid` command ---------------------------------------------------------------
def cmd_grid(args) -> None:
    """`blinkgen grid PROMPT --x NAME=V1,V2 --y NAME=V1,V2`: one labelled comparison PNG (grid.py)."""
    from .outputs import check_new, check_png_names, image_name
    from .pngmeta import save_png
    from .prompts import Wildcards, wildcard_dirs

    from .cli_flags import flag_words
    from .pipeline import check_negative_prompt

    if not args.prompt.strip():
        raise UserInputError("the prompt is empty")
    with flag_words({"negative_prompt": "--negative"}):  # an axis keeps the API name it was given
        check_negative_prompt(args.negative)
    x = parse_axis(args.x) if args.x else None
    y = parse_axis(args.y) if args.y else None
    if x is None and y is None:
        raise UserInputError("give at least one axis: --x NAME=V1,V2,... (and --y)")
    base = {k: v for k, v in (("steps", args.steps), ("guidance", args.guidance), ("sampler", args.sampler),
                              ("style", args.style), ("negative_prompt", args.negative)) if v is not None}
    record_stub = {"prompt": args.prompt, "seed": args.seed, "x": args.x, "y": args.y, "n": args.n,
                   "model": args.model, **base}
    path = Path(args.output) if args.output else Path(args.outdir or ".") / image_name(record_stub, args.seed, "xy")
    check_png_names([path])
    check_new([path], args.overwrite)
    image, record = run_grid(args.prompt, x, y, args.model, args.n, args.seed, base, args.score, args.batch_size,
                             args.device, args.dtype, Wildcards(wildcard_dirs(args.wildcards or ())),
                             args.cell_scale)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_png(image, path, record, args.overwrite)
    scores = record["grid"].get("scores")
    if scores:
        cols = record["grid"]["x_labels"] or [""]
        for label, row in zip(record["grid"]["y_labels"] or [""], scores):
            print(f"{label:>20} " + "  ".join(f"{c}: {next(iter(v.values())):.3f}" for c, v in zip(cols, row)),
                  file=sys.stderr)
    print(path)


def register(sub) -> None:
    """Add the `grid` subcommand to the CLI's subparsers."""
    p = sub.add_parser("grid", help="compare settings, models or checkpoints in one labelled grid PNG",
                       description="Every cell uses the same seeds; axes are NAME=V1,V2,... over any setting "
                                   "(steps, guidance, sampler, style, negative_prompt, ...), seed, prompt, "
                                   "variation_strength, or model (names, folders, training checkpoints).")
    p.add_argument("prompt")
    p.add_argument("--x", default=None, metavar="NAME=V1,V2", help="columns, e.g. steps=2,4,8,12")
    p.add_argument("--y", default=None, metavar="NAME=V1,V2", help="rows, e.g. guidance=1,3,5 or model=default,runs/a/model")
    p.add_argument("-n", type=int, default=1, help="images per cell (seeds seed..seed+n-1 in every cell)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model", default="default", help="the model of cells without a model axis")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--guidance", type=float, default=None)
    p.add_argument("--sampler", default=None)
    p.add_argument("--style", default=None)
    p.add_argument("--negative", default=None, metavar="TEXT")
    p.add_argument("--score", action="store_true", help="score each cell: the evaluator's prompt alignment, or the "
                   "shapes checker's exact accuracy for shapes prompts")
    p.add_argument("--wildcards", action="append", default=None, metavar="DIR")
    p.add_argument("--batch-size", type=positive_int_arg, default=16)
    p.add_argument("--cell-scale", type=positive_int_arg, default=None, help="enlarge images by this factor (nearest)")
    p.add_argument("-o", "--output", default=None)
    p.add_argument("--outdir", default=None)
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="fp32")
    p.set_defaults(func=cmd_grid)
