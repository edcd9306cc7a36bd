"""`evaluate(model, data_spec, samples, out_dir, seed)`: one honest, repeatable quality report.

What it measures, and against what:
- prompts: the primary captions of the real images the training loop holds out
  (`blinkgen.train.loop.split`, split seed 0 = the training default), in a fixed shuffled order,
  cycled to `samples`; or a prompt file (used in its order). Image i gets seed `seed + i`, so the run is a pure function of
  (model, data, samples, seed, settings) -- two runs give identical numbers.
- FD, KID and precision/recall of the generated images against those held-out REAL images, in
  the shipped contrastive evaluator's image-embedding space (not Inception: not comparable with
  published FIDs; FD is biased upwards at small N, so compare runs at the same N only).
- alignment (mean cosine of image and prompt embeddings) and retrieval R@1/R@5 (does an image
  pick its own prompt among the distinct prompts), with the real images' own scores as the ceiling.
- for prompts of the shapes grammar, the compositional accuracy read back from pixels
  (`eval.shapes_check.score`).
- the closed loop: each image captioned by the generative captioner (eval/captioner.py) and the
  caption compared with its prompt (eval/caption_metrics.py: exact match, MiniLM similarity, and
  for shapes prompts the scene read back through the grammar's parser).
Writes metrics.json, report.md, grid.png and prompts.txt into out_dir.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import platform
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from ..checks import as_int
from ..errors import UserInputError
from ..outputs import check_new, write_bytes, write_text
from ..progress import bar
from ..seeds import check_seed, seed_run
from ..textio import read_lines
from . import metrics as M
from .contrastive import Evaluator, held_out_split, load_evaluator, retrieval_at_k
from .leakage import image_hashes, seen_by_generator

GRID_MAX = 64
OUTPUT_FILES = ("metrics.json", "prompts.txt", "grid.png", "report.md")
PROMPT_ORDER_SEED = 0  # fixed: the prompt list is part of the benchmark, not of the run's seed
KID_SUBSETS = 50
log = logging.getLogger(__name__)
PR_K = 3


@dataclass
class Reference:
    """The real side of a comparison, computed once: held-out images' embeddings, their primary
    captions, the prompt list drawn from them, and the ceiling scores of real images."""

    evaluator: Evaluator
    real_emb: torch.Tensor  # (R, 384)
    prompts: list[str]  # the full committed prompt list; a run of N uses the first N, cycled
    ceiling: dict
    data_spec: str
    source: str
    own: list[str]  # the held-out images' primary captions, row-aligned with real_emb
    unseen_by_evaluator: bool | None  # True: these held-out images were kept out of its training
    held_hashes: list[str] | None = None  # pixel hashes of the held-out images (eval.leakage)
    held_images: torch.Tensor | None = None  # (R, 3, H, W) uint8, row-aligned with real_emb


def reference_unseen(ev: Evaluator, data_spec: str, split_seed: int) -> bool | None:
    """True when the evaluator's training excluded this spec's held-out split (it was the training
    spec or one of `exclude_specs`, same seed); None (unknown) otherwise -- most of any other
    spec's held-out images were probably in its training set, which flatters the ceiling."""
    tr = ev.config.get("training") or {}
    known = [tr.get("data")] + list(tr.get("exclude_specs") or [])
    return True if data_spec.strip() in known and split_seed == tr.get("seed") else None


def _prompts_from_file(path) -> list[str]:
    p = Path(path)
    out = read_lines(p, "prompts file")
    if not out:
        raise UserInputError(f"prompts file {p} has no prompts")
    return out


def _is_shapes(prompt: str) -> bool:
    from ..data import shapes as S

    try:
        S.parse_caption(prompt)
        return True
    except ValueError:
        return False


def build_reference(data_spec: str, image_size: int = 64, prompts=None, split_seed: int = 0,
                    evaluator: Evaluator | None = None) -> Reference:
    from ..data.registry import load_dataset

    ev = evaluator or load_evaluator()
    data = load_dataset(data_spec, image_size, split_seed)
    held = held_out_split(data, split_seed)[1]
    _check_reference_size(len(held), len(data), data_spec)
    real_emb = ev.embed_images(held.images)
    own = [c[0] for c in held.captions]
    if prompts is None:
        # a fixed shuffle, so any prefix mixes the sources (the split keeps dataset order: emoji first)
        order = torch.randperm(len(own), generator=torch.Generator().manual_seed(PROMPT_ORDER_SEED)).tolist()
        plist = [own[i] for i in order]
        source = (f"held-out primary captions of {data_spec!r} (train.loop.split, seed {split_seed}), "
                  f"shuffled with seed {PROMPT_ORDER_SEED}")
    elif isinstance(prompts, (str, Path)):
        plist, source = _prompts_from_file(prompts), str(prompts)
    else:
        plist, source = [str(p) for p in prompts], "list"
    with blas_threads():  # FD of two halves of the real set: the small-sample floor, not 0
        floor = M.frechet_distance(real_emb[0::2], real_emb[1::2]) if len(held) >= 4 else None
    ceiling = {"real_alignment": M.alignment(real_emb, ev.embed_texts(own)),
               **_retrieval(real_emb, own, ev, prefix="real_"), "n_real": len(held),
               "real_fd_between_halves": floor}
    return Reference(ev, real_emb, plist, ceiling, data_spec, source, own, reference_unseen(ev, data_spec, split_seed),
                     image_hashes(held.images), held.images)


MIN_REFERENCE = 2  # FD and KID need two real rows for a covariance
SMALL_REFERENCE = 50  # below this, FD / KID / R@1 move a lot with one image: say so


def _check_reference_size(n_held: int, n_data: int, data_spec: str) -> None:
    """Refuse (before any generating) a held-out split too small to score against, and warn when
    it is small. The split is the training loop's (2% of the images, at least one)."""
    if n_held < MIN_REFERENCE:
        raise UserInputError(
            f"{data_spec!r} has {n_data} images, so its held-out split (the training loop's 2%) holds "
            f"{n_held}; eval compares generated images with at least {MIN_REFERENCE} held-out real ones: "
            "use a dataset of at least 75 images")
    if n_held < SMALL_REFERENCE:
        log.warning("the held-out split of %r holds only %d real images: FD, KID and R@1 on so few are "
                    "noisy (the real ceiling too); a dataset of %d+ images gives %d", data_spec, n_held,
                    SMALL_REFERENCE * 50, SMALL_REFERENCE)


def _retrieval(img_emb: torch.Tensor, prompts: list[str], ev: Evaluator, prefix: str = "") -> dict:
    """R@k of each image against the DISTINCT prompts of the run (duplicates would tie)."""
    uniq = sorted(set(prompts))
    idx = {p: i for i, p in enumerate(uniq)}
    txt = ev.embed_texts(uniq)
    t = [idx[p] for p in prompts]
    return {f"{prefix}retrieval_R@1": retrieval_at_k(img_emb, txt, t, 1),
            f"{prefix}retrieval_R@5": retrieval_at_k(img_emb, txt, t, 5),
            f"{prefix}retrieval_chance_R@1": 1.0 / len(uniq)}


def same_prompts(ref: Reference, prompts: list[str]) -> list[int]:
    """Rows of the held-out split whose primary caption is one of the run's prompts."""
    asked = set(prompts)
    return [i for i, c in enumerate(ref.own) if c in asked]


def _same_prompt_scores(emb: torch.Tensor, same: list[int], prompts: list[str], ref: Reference) -> dict:
    """R@1, R@5 and alignment of image embeddings of held-out rows `same` (their own captions),
    ranked among the run's distinct prompts: the comparable ceiling of the generated images'."""
    ev, uniq = ref.evaluator, sorted(set(prompts))
    idx = {p: j for j, p in enumerate(uniq)}
    txt_u, t = ev.embed_texts(uniq), [idx[ref.own[i]] for i in same]
    return {"n": len(same), "retrieval_R@1": retrieval_at_k(emb, txt_u, t, 1),
            "retrieval_R@5": retrieval_at_k(emb, txt_u, t, 5),
            "alignment": M.alignment(emb, ev.embed_texts([ref.own[i] for i in same]))}


def through_decoder(gen, ref: Reference, prompts: list[str]) -> dict | None:
    """The same-prompt real images after the model's encoder and decoder (Pipeline.round_trip),
    scored as real_same_prompts: what a model drawing through that decoder reaches by drawing the
    real images themselves. None for a family without one, or without held-out images."""
    same = same_prompts(ref, prompts)
    back = gen.round_trip(ref.held_images[same]) if same and ref.held_images is not None else None
    if back is None:
        return None
    with blas_threads():
        return {**_same_prompt_scores(ref.evaluator.embed_images(back), same, prompts, ref),
                "note": "the same real images after the model's autoencoder/tokenizer round trip"}


def run_prompts(ref: Reference, samples: int, seed: int) -> tuple[list[str], list[int]]:
    """The run's prompts (cycled) and seeds (seeds.seed_run: seed, seed+1, ..., never wrapped)."""
    return [ref.prompts[i % len(ref.prompts)] for i in range(samples)], seed_run(seed, samples)


def blas_threads(n: int | None = None):
    """Cap OpenBLAS/MKL threads (numpy/scipy) at torch's count for the metric maths: on a busy
    machine an oversubscribed scipy sqrtm of a 384x384 matrix took 16 s instead of 0.4 s. Fixing
    the count also keeps the numbers reproducible. A no-op where threadpoolctl is missing."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - speed only, never the numbers' meaning
        return contextlib.nullcontext()
    return threadpool_limits(limits=n or torch.get_num_threads(), user_api="blas")


def score_images(images, prompts: list[str], ref: Reference, kid_seed: int = 0) -> dict:
    """Every quality number for one set of generated images (PIL list) and their prompts."""
    with blas_threads():
        return _score_images(images, prompts, ref, kid_seed)


def _score_images(images, prompts: list[str], ref: Reference, kid_seed: int) -> dict:
    ev = ref.evaluator
    fake = ev.embed_images(images)
    txt = ev.embed_texts(prompts)
    out = {"n": len(images), "fd": M.frechet_distance(fake, ref.real_emb),
           "alignment": M.alignment(fake, txt), **_retrieval(fake, prompts, ev)}
    # the comparable ceiling: real held-out images of the same prompts, ranked among the same
    # distinct prompts (the whole-set ceiling ranks among all held-out captions: other chance)
    same = same_prompts(ref, prompts)
    if same:
        out["real_same_prompts"] = {**_same_prompt_scores(ref.real_emb[same], same, prompts, ref),
                                    "note": "real images of these prompts, ranked among the run's distinct prompts"}
    if len(images) >= 2:
        k = M.kid(fake, ref.real_emb, subsets=KID_SUBSETS, subset_size=1000, seed=kid_seed)
        out.update(kid=k.mean, kid_std=k.std)
    if len(images) > PR_K and len(ref.real_emb) > PR_K:
        out.update(M.precision_recall(ref.real_emb, fake, k=PR_K))
    sh = [i for i, p in enumerate(prompts) if _is_shapes(p)]
    if sh:
        from .shapes_check import score

        s = score([np.asarray(images[i]) for i in sh], [prompts[i] for i in sh])
        out["shapes"] = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in s.items()}
    return out


def versions() -> dict:
    """Library versions from package metadata (no imports: diffusers alone costs seconds)."""
    from importlib.metadata import PackageNotFoundError, version

    def v(name):
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                                cwd=Path(__file__).parent).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {"blinkgen": __version__, "git_commit": commit, "python": platform.python_version(),
            "torch": torch.__version__, "numpy": np.__version__, "scipy": v("scipy"),
            "transformers": v("transformers"), "diffusers": v("diffusers"),
            "platform": platform.platform(), "torch_threads": torch.get_num_threads()}


def evaluate(model, data_spec: str, samples: int = 128, out_dir=None, seed: int = 0, *, steps=None,
             guidance=None, sampler=None, prompts=None, split_seed: int = 0, batch_size: int = 32,
             evaluator=None, nn_reference=None, style=None, overwrite: bool = False,
             progress: bool = True, captioner="shipped") -> dict:
    """Generate `samples` images and score them (see the module doc). model: a Pipeline, or an
    embedded name / model folder. nn_reference: a folder dataset (the emoji training folder): adds
    the nearest-neighbour recognisability check (eval/recognise.py) over the prompts that name one
    of its images, one image per distinct prompt. style: the diffusion `style` setting (None = the
    model's default; "none" = no style phrase). captioner: "shipped", a captioner folder, or None
    (no caption check); the shipped one is skipped, and the skip recorded, where none is shipped.
    Returns the dict written to
    out_dir/metrics.json; everything but `timing` is a deterministic function of the inputs.
    Integer arguments take anything integral (checks.as_int); seeds follow blinkgen.seeds. Files
    already in out_dir (OUTPUT_FILES) are replaced only with overwrite=True -- checked before any work."""
    from ..api import load
    from ..pipeline import Pipeline, requests

    samples = as_int(samples, "samples", 2)
    batch_size = as_int(batch_size, "batch_size", 1)
    seed_run(seed, samples)  # the run's seeds must fit the seed range: refuse now, not after generating
    split_seed = check_seed(split_seed, "split_seed")
    if out_dir is not None:
        check_new([Path(out_dir) / f for f in OUTPUT_FILES], overwrite)
    gen = model if isinstance(model, Pipeline) else load(str(model))
    settings = gen.settings(steps, guidance, sampler, **({"style": style} if style is not None else {}))
    ev = evaluator if isinstance(evaluator, Evaluator) else load_evaluator(evaluator)
    t0 = time.perf_counter()
    ref = build_reference(data_spec, gen.image_size, prompts, split_seed, ev)
    plist, seeds = run_prompts(ref, samples, seed)
    t1 = time.perf_counter()
    images = []
    with bar(total=samples, desc="eval: generating", unit="img", enabled=progress) as pbar:
        for i in range(0, samples, batch_size):
            images += gen.sample(requests(plist[i:i + batch_size], seeds[i:i + batch_size]), settings).images
            pbar.update(len(plist[i:i + batch_size]))
    t2 = time.perf_counter()
    quality = score_images(images, plist, ref)
    rt = through_decoder(gen, ref, plist)
    if rt is not None:
        quality["real_same_prompts_through_decoder"] = rt
    if nn_reference is not None:
        quality["nn"] = _nn_check(images, plist, nn_reference, gen.image_size)
    if captioner is not None:
        quality["caption"] = _caption_check(images, plist, captioner)
    seen = reference_seen(gen, ref, split_seed)
    t3 = time.perf_counter()
    result = {
        "model": getattr(gen, "name", str(model)), "family": gen.family, "settings": settings.to_dict(),
        "data": data_spec, "prompts_source": ref.source, "samples": samples, "seed": seed,
        "split_seed": split_seed, "metrics": quality, "ceiling": ref.ceiling,
        "reference_unseen_by_evaluator": ref.unseen_by_evaluator,
        "reference_seen_by_generator": seen,
        "evaluator": {"path": str(ev.folder), "sha256": ev.weights_sha256(),
                      "held_out_retrieval": ev.config.get("held_out_retrieval")},
        "versions": versions(),
        "timing": {"reference_s": t1 - t0, "generate_s": t2 - t1, "score_s": t3 - t2,
                   "images_per_s": samples / max(t2 - t1, 1e-9), "batch_size": batch_size},
    }
    if out_dir is not None:
        write_outputs(Path(out_dir), result, images, plist, overwrite)
    return result


def reference_seen(gen, ref: Reference, split_seed: int = 0) -> dict:
    """eval.leakage.seen_by_generator for a loaded pipeline and a reference (its held-out images
    the pipeline's lineage trained on), logging a warning unless the count is 0."""
    seen = seen_by_generator(model_config(gen), ref.data_spec, split_seed, ref.held_hashes, gen.image_size)
    if seen["seen"] != 0:
        log.warning("the generator's training saw %s of the %d held-out reference images of %r (%s): "
                    "FD, R@1 and alignment are flattered", "an unknown number" if seen["seen"] is None
                    else seen["seen"], seen["n_reference"], ref.data_spec,
                    "; ".join(f"{r['role']}: {r['data']} seen {r['seen']}" for r in seen["runs"]))
    return seen


def model_config(gen) -> dict | None:
    """A pipeline's model config: the config.json of the folder it was loaded from, else the
    config it carries in memory (pipelines that record no folder), else None."""
    from ..modelio import read_config

    folder = getattr(gen, "folder", None)
    return read_config(Path(folder)) if folder is not None else getattr(gen, "config", None)


def _nn_check(images, prompts: list[str], folder, size: int) -> dict:
    from ..data.folder import load_folder
    from .recognise import nearest_neighbour_hits, own_images

    ref = load_folder(folder, size)
    first = {}
    for i, p in enumerate(prompts):
        first.setdefault(p, i)
    keep = [i for p, i in first.items() if own_images(p, ref)]
    if not keep:
        raise UserInputError(f"no prompt of this run names an image of {folder}; the check needs emoji-name prompts")
    r = nearest_neighbour_hits([images[i] for i in keep], [prompts[i] for i in keep], ref)
    return {k: r[k] for k in ("hits", "n", "rate", "k", "side")} | {"reference": str(folder)}


def _caption_check(images, prompts: list[str], captioner) -> dict:
    from .caption_metrics import caption_agreement
    from .captioner import CAPTIONER_DIR, load_captioner

    if captioner == "shipped":
        if not (CAPTIONER_DIR / "config.json").is_file():
            return {"skipped": "no shipped captioner"}
        captioner = None
    writer = load_captioner(captioner)
    return {**caption_agreement(writer, images, prompts), "captioner": str(writer.folder)}


def write_outputs(out: Path, result: dict, images, prompts: list[str], overwrite: bool = False) -> None:
    """OUTPUT_FILES into `out`; an existing one is replaced only with overwrite (blinkgen.outputs)."""
    import io

    from ..pngmeta import grid

    out.mkdir(parents=True, exist_ok=True)
    check_new([out / f for f in OUTPUT_FILES], overwrite)
    buf = io.BytesIO()
    grid(images[:GRID_MAX]).save(buf, format="PNG")
    write_text(out / "metrics.json", json.dumps(result, indent=2, sort_keys=True), overwrite)
    write_text(out / "prompts.txt", "".join(p + "\n" for p in prompts), overwrite)
    write_bytes(out / "grid.png", buf.getvalue(), overwrite)
    from .report import report_markdown

    write_text(out / "report.md", report_markdown(result), overwrite)
