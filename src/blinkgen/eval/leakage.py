"""Which of an evaluation's held-out images the generator trained on: its lineage's training splits.

Why: the held-out split is a seeded permutation of the whole dataset spec (`train.loop.split`), so
a spec of another size ('emoji+shapes:12000' instead of 'emoji+shapes:3000'), another split seed
or other validation fractions hold out other images. A model trained, distilled or warm-started
on one spec and scored on another's held-out split has trained on most of that reference.
Measured: the default shipped at git 19bc72e (a student distilled on emoji+shapes:12000) had
trained on 208 of the 211 held-out images of emoji+shapes:3000, the split its gates were scored
on. `evaluate` records the count (metrics.json "reference_seen_by_generator"); a reader trusts
FD, R@1 and alignment only where it is 0.

Identity is by content (a hash of the uint8 pixels at the evaluation size), not by name, so two
folders that reuse file names do not collide and a renamed copy still counts.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from ..errors import UserInputError
from ..modelio import read_config

DEFAULT_VAL = {"val_fraction": 0.02, "val_max": 256}  # train.config.TrainConfig's defaults


def image_hashes(images: torch.Tensor) -> list[str]:
    """images: uint8 (N, 3, H, W) -> N hex digests of their pixels (sha1: identity, not security)."""
    x = images.contiguous()
    return [hashlib.sha1(x[i].numpy().tobytes()).hexdigest() for i in range(len(x))]


def _run(role: str, training: dict | None) -> dict:
    t = training or {}
    data = t.get("data")
    return {"role": role, "data": data.strip() if isinstance(data, str) else None, "seed": int(t.get("seed", 0)),
            "val_fraction": float(t.get("val_fraction", DEFAULT_VAL["val_fraction"])),
            "val_max": int(t.get("val_max", DEFAULT_VAL["val_max"]))}


def lineage(config: dict, role: str = "model") -> list[dict]:
    """Every training run a model folder's config.json records, each as {"role", "data", "seed",
    "val_fraction", "val_max"} (data None where the config does not say):
    - the run that wrote the folder (`training`);
    - a distilled student's teacher (`distilled.teacher_training`);
    - a warm start's source (`training.init_from.lineage`, recorded by train.warm_start), recursively.
    A LoRA adapter folder is not a model folder; its base model's lineage is the base's config."""
    runs = [_run(role, config.get("training"))]
    init = (config.get("training") or {}).get("init_from")
    if isinstance(init, dict):
        src = init.get("lineage")
        if src is None and init.get("path") and (Path(init["path"]) / "config.json").is_file():
            src = lineage(read_config(Path(init["path"])), f"{role} <- init_from")
        runs += src if src is not None else [{"role": f"{role} <- init_from", "data": None, "seed": 0,
                                               **DEFAULT_VAL}]
    distilled = config.get("distilled")
    if isinstance(distilled, dict):
        runs.append(_run(f"{role} <- teacher", distilled.get("teacher_training")))
    return runs


def _training_hashes(run: dict, size: int) -> set[str]:
    from ..data.registry import load_dataset
    from ..train.config import TrainConfig
    from ..train.loop import split

    data = load_dataset(run["data"], size, run["seed"])
    cfg = TrainConfig(seed=run["seed"], val_fraction=run["val_fraction"], val_max=run["val_max"])
    return set(image_hashes(split(data, cfg)[0].images))


def seen_by_generator(config: dict | None, data_spec: str, split_seed: int, held_hashes: list[str],
                      size: int, val: dict | None = None) -> dict:
    """How many held-out reference images (their pixel hashes, at `size`) each run in the model's
    lineage trained on. A run with the reference's own spec, seed and default fractions held out
    exactly these images (counted 0 without loading); `val` gives the reference split's
    {"val_fraction", "val_max"} where they are not the defaults. Returns {"n_reference", "seen" (the union;
    None when some run records no data), "runs": [{role, data, seed, seen}]}. Loads each other
    spec once (seconds for the emoji set; shapes specs render)."""
    held = set(held_hashes)
    out_runs, union, unknown = [], set(), False
    same = {"data": data_spec.strip(), "seed": split_seed, **(val or DEFAULT_VAL)}
    for run in lineage(config or {}):
        row = {k: run[k] for k in ("role", "data", "seed")}
        if run["data"] is None:
            row["seen"], unknown = None, True
        elif all(run[k] == v for k, v in same.items()):
            row["seen"] = 0
        else:
            try:
                hit = held & _training_hashes(run, size)
            except (UserInputError, OSError) as e:  # e.g. a folder spec that is not on this machine
                row.update(seen=None, error=f"cannot load {run['data']!r}: {e}")
                unknown = True
            else:
                row["seen"] = len(hit)
                union |= hit
        out_runs.append(row)
    return {"n_reference": len(held), "seen": None if unknown else len(union), "runs": out_runs}


def val_seen_by_ancestors(cfg, val_images: torch.Tensor) -> dict | None:
    """For a training run that starts from another model (`--init-from`, or a distill's teacher):
    how many of its validation images (uint8 (N, 3, H, W)) that model's lineage trained on -- a
    validation loss over them is flattered, and early stopping reads it. None without an ancestor."""
    from ..api import resolve

    folder = cfg.init_from or cfg.teacher
    if not folder:
        return None
    return seen_by_generator(read_config(resolve(str(folder))), cfg.data, cfg.seed, image_hashes(val_images),
                             cfg.size, {"val_fraction": cfg.val_fraction, "val_max": cfg.val_max})
