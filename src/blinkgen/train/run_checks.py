"""Checks a training run makes of its own folder and data before it trains, and says to its
user: a resume must rebuild the network its checkpoint holds (check_resume_matches), and a run on
a handful of pictures names the ones it holds out (held_out_note)."""
from __future__ import annotations

import json
from pathlib import Path

from ..data.types import ImageCaptionSet
from ..errors import UserInputError
from .checkpoint import latest_checkpoint
from .config import TrainConfig

SMALL_DATA = 50  # at most this many images: the run names the held-out ones


def held_out_note(n_data: int, val: ImageCaptionSet) -> str | None:
    """For a handful of pictures (a LoRA fine-tune's folder), which of them the held-out split
    keeps out of training, by name: a user with 9 icons should know which 2 never train."""
    if n_data > SMALL_DATA:
        return None
    return (f"held out for validation, never trained on: {len(val)} of {n_data} images ("
            + ", ".join(val.names) + ")")


# the TrainConfig fields that decide the shape of what a checkpoint holds: a resume must keep them
NETWORK_FIELDS = ("family", "task", "preset", "size", "lora_rank", "text_layers", "distill_objective")
FLAG_OF = {"preset": "--preset", "size": "--size", "lora_rank": "--rank", "text_layers": "--text-layers",
           "distill_objective": "--objective", "family": "--family"}


def check_resume_matches(run: Path, cfg: TrainConfig) -> None:
    """UserInputError (one line) when `run` holds a checkpoint of another network than `cfg`
    builds (its train_config.json differs in NETWORK_FIELDS): loading it would fail with a size
    mismatch deep in load_state_dict. Nothing to check for a run without checkpoints."""
    saved_path = run / "train_config.json"
    if latest_checkpoint(run) is None or not saved_path.is_file():
        return
    saved, now = json.loads(saved_path.read_text()), cfg.to_dict()
    diff = [k for k in NETWORK_FIELDS if k in saved and saved.get(k) != now.get(k)]
    if diff:
        shown = ", ".join(f"{FLAG_OF.get(k, k)} {saved[k]} there, {now.get(k)} now" for k in diff)
        raise UserInputError(f"--resume: {run} holds a checkpoint of another network than this command builds "
                             f"({shown}); rerun the command that started it, with the same flags, plus --resume")
