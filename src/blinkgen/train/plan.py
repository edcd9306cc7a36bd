"""The stage plan of a training run: which models get trained, with which preset, for how many
steps -- printed before anything runs, so a run's cost is never a surprise.

A task with a prerequisite in its family's registry entry (`Family.prerequisites`) trains that
first unless `--autoencoder` names a trained one: a diffusion run its KL autoencoder (stage 1),
an ar or maskgit run its FSQ tokenizer; then the generator (stage 2). Stage 1's steps default in
proportion to the run: `--ae-steps` = 2 x `--steps`, at least 10 and at most 2000 (the full
default, reached from `--steps 1000` up); its preset is `--ae-preset`, by default "S", or "tiny"
when `--preset tiny` (a smoke test). A 2-step tiny run then trains a 10-step tiny autoencoder in
seconds instead of a 2000-step S one for half an hour.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from .config import TrainConfig

AE_STEPS_PER_STEP, AE_STEPS_MIN, AE_STEPS_MAX = 2, 10, 2000
AE_PRESET_DEFAULT = "S"
SMOKE_PRESET = "tiny"  # a smoke-test run: its stage 1 is tiny too unless --ae-preset says otherwise


def default_ae_preset(preset: str) -> str:
    """Stage-1 preset when --ae-preset is not given (see the module doc)."""
    return SMOKE_PRESET if preset == SMOKE_PRESET else AE_PRESET_DEFAULT


def default_ae_steps(steps: int) -> int:
    """Stage-1 steps when --ae-steps is not given (see the module doc)."""
    return min(AE_STEPS_MAX, max(AE_STEPS_MIN, AE_STEPS_PER_STEP * int(steps)))


def stage1_config(cfg: TrainConfig) -> TrainConfig | None:
    """The autoencoder/tokenizer run that must precede `cfg` (its family's prerequisite task), or
    None (the task needs none, or --autoencoder names a trained one)."""
    family, task = cfg.target()
    first = family.prerequisites.get(task)
    if not first or cfg.autoencoder:
        return None
    steps = default_ae_steps(cfg.steps) if cfg.ae_steps is None else cfg.ae_steps
    preset = default_ae_preset(cfg.preset) if cfg.ae_preset is None else cfg.ae_preset
    return replace(cfg, family=family.name, task=first, out=str(Path(cfg.out) / "ae"), steps=steps, ae_steps=None,
                   ae_preset=None, preset=preset, lr=cfg.ae_lr, ema_decay=min(cfg.ema_decay, 0.999), patience=0,
                   sample_prompts=[], warmup=min(cfg.warmup, 100))


@dataclass(frozen=True)
class Stage:
    task: str  # what it trains: autoencoder, tokenizer, diffusion, ar, maskgit, ...
    preset: str
    steps: int
    out: str
    note: str = ""  # where the numbers come from / which flag changes them
    reuse: str | None = None  # a trained model folder used instead of training this stage


def stage_plan(cfg: TrainConfig) -> list[Stage]:
    """Every stage `train(cfg)` will run (or reuse), in order."""
    from .warm_start import with_init_autoencoder

    cfg = with_init_autoencoder(cfg)  # --init-from brings its autoencoder, as train() does
    family, task = cfg.target()
    stages = []
    ae = stage1_config(cfg)
    if ae is not None:
        folder = Path(ae.out) / "model"
        how = ("--ae-steps" if cfg.ae_steps is not None else
               f"--ae-steps not given: {AE_STEPS_PER_STEP} x --steps, within [{AE_STEPS_MIN}, {AE_STEPS_MAX}]")
        reuse = str(folder) if (folder / "config.json").is_file() else None
        which = "--ae-preset" if cfg.ae_preset is not None else f"--ae-preset not given: {ae.preset} for --preset {cfg.preset}"
        stages.append(Stage(ae.task, ae.preset, ae.steps, ae.out, f"{how}; {which}", reuse))
    elif cfg.autoencoder and family.prerequisites.get(task):
        stages.append(Stage(family.prerequisites[task], "-", 0, cfg.autoencoder, reuse=cfg.autoencoder))
    warm = f"; warm start from {cfg.init_from} unless resuming" if cfg.init_from else ""
    stages.append(Stage(task, cfg.preset, cfg.steps, cfg.out, "--steps, --preset" + warm))
    return stages


def format_plan(stages: list[Stage], batch_size: int | None = None) -> str:
    """The plan as the lines `blinkgen train` prints first."""
    lines = [f"training plan: {len(stages)} stage{'s' * (len(stages) > 1)}"
             + (f", batch size {batch_size}" if batch_size else "")]
    for i, s in enumerate(stages, 1):
        if s.reuse:
            lines.append(f"  stage {i}: {s.task}: reuse the trained {s.reuse} (no training)")
        else:
            lines.append(f"  stage {i}: {s.task}, preset {s.preset}, {s.steps} steps -> {s.out}  ({s.note})")
    return "\n".join(lines)
