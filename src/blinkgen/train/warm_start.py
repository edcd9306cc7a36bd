"""Warm start (`blinkgen train --init-from MODEL`): a fresh run whose network begins at the weights
of a trained model folder -- the committed teacher, say -- instead of a random init.

What carries over: the network's weights only. Not the optimizer moments, not the step count or
the learning-rate schedule, not the EMA history (every EMA copy starts at the loaded weights). A
`--resume` of a run that already holds checkpoints continues its checkpoint and ignores
--init-from. This is what lets a run continue on a new machine from the weights in git alone,
where `--resume` needs the old run folder.

The family's task checks that the folder holds the same network (`Task.warm_start`); for the
diffusion family the folder's own autoencoder is the run's latent space unless --autoencoder
names one (the same weights are then required).
"""
from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

from ..errors import UserInputError
from ..eval.leakage import lineage
from ..modelio import read_config, weights_hash
from .config import TrainConfig

log = logging.getLogger(__name__)


def init_folder(cfg: TrainConfig) -> Path | None:
    """The model folder --init-from names (an embedded name or a folder), or None when not set.
    Raises ModelLoadError (one line) when it is neither."""
    if not cfg.init_from:
        return None
    from ..api import resolve  # the registry's resolver, imported on use (as train/lora.py does)

    return resolve(str(cfg.init_from))


def with_init_autoencoder(cfg: TrainConfig) -> TrainConfig:
    """cfg with `autoencoder` set to the --init-from folder's autoencoder/ when the task needs one
    and none is given: the warm-started denoiser only makes sense in the latent space it learnt."""
    folder = init_folder(cfg)
    if folder is None or cfg.autoencoder:
        return cfg
    family, task = cfg.target()
    if family.prerequisites.get(task) and (folder / "autoencoder" / "config.json").is_file():
        return replace(cfg, autoencoder=str(folder / "autoencoder"))
    return cfg


def precheck(cfg: TrainConfig) -> None:
    """The checks that need no network or data, run before the dataset is loaded and encoded (minutes
    on a large set): the folder exists, is of this run's family, and is not a distilled student
    (it has a step-size input; its teacher is the network to continue). UserInputError otherwise."""
    folder = init_folder(cfg)
    if folder is None:
        return
    config = read_config(folder)
    family, _ = cfg.target()
    where = f"--init-from {folder}"
    if config.get("family") != family.name:
        raise UserInputError(f"{where} holds a {config.get('family')!r} model, not a {family.name} model")
    if config.get("distilled"):
        raise UserInputError(f"{where} is a distilled student (it has a step-size input); warm-start from "
                             f"its teacher ({config['distilled'].get('teacher')}) instead")


def warm_start(task, cfg: TrainConfig) -> dict:
    """Load the --init-from weights into `task.model` (before the loop copies it into the EMAs).
    Returns the provenance recorded in the exported config: {"path", "weights_sha256"}.
    Raises UserInputError when the folder holds another family or network."""
    folder = init_folder(cfg)  # the loop calls this only when cfg.init_from is set
    task.warm_start(folder)
    # the source's training runs travel with the record, so eval.leakage can tell which held-out
    # images this model has seen even after the source folder is gone
    record = {"path": str(folder.resolve()), "weights_sha256": weights_hash(folder),
              "lineage": lineage(read_config(folder), "init_from")}
    log.info("warm start from %s (weights sha256 %s)", folder, record["weights_sha256"][:12])
    return record
