"""The family registry: one line per generator family, read by `blinkgen.load`, the CLI (sampler
and family help, `train --family`), `TrainConfig` validation and the tests' fixtures.

A family is one package, `blinkgen/families/<name>/`, holding its pipeline (pipeline.py), its
model-folder format (folder.py: save, load, a `tiny()` factory for tests) and its training tasks
(tasks.py), and describing itself in its `__init__.py` as `FAMILY = Family(...)`. Adding a family
is that package plus one line in BUILTIN below.

Lazy and loud: this module imports no family; `get(name)` imports that family's package on first
use and lets any import error through (a family that cannot import is a bug to see, never a
family to drop quietly). A family's `__init__.py` stays light (strings, no torch), so building the
CLI's help reads every family without loading a network.

Extra families (tests, plug-ins) register without editing this file: `register(name, module)` in
the process, or, for subprocesses such as the CLI and the server, the environment variable
BLINKGEN_EXTRA_FAMILIES="name=package.module[,name2=module2]" (each module defines FAMILY).
"""
from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field

from ..errors import UserInputError

# name -> the package whose FAMILY describes it (imported on first use)
BUILTIN: dict[str, str] = {
    "diffusion": "blinkgen.families.diffusion",
    "ar": "blinkgen.families.ar",
    "upscaler": "blinkgen.families.upscaler",
    "gan": "blinkgen.families.gan",
    "vae": "blinkgen.families.vae",
}
EXTRA_ENV = "BLINKGEN_EXTRA_FAMILIES"
_registered: dict[str, str] = {}


@dataclass(frozen=True)
class Family:
    """What the rest of blinkgen knows about a family. Names are "module:attribute" strings,
    resolved on use, so describing a family imports nothing heavy.

    name: the `family` a model folder's config.json names.
    summary: one line for help texts.
    pipeline: "module:Class", a `pipeline.Pipeline` subclass with
        `from_folder(folder, device="cpu", dtype="fp32")`.
    samplers: mode -> sampler names, for help texts (the loaded pipeline's `samplers` is the truth
        for one model; tests/contract checks the two agree). The family's own name is its main mode.
    tasks: training task name -> "module:Class" (the protocol in `train/task.py`).
    default_task: the task `blinkgen train --family <name>` runs.
    prerequisites: task -> the task whose exported model it needs first (the loop trains that one
        into <out>/ae when `--autoencoder` is not given).
    aliases: older `--family` spellings -> a task of this family (`--family maskgit` = ar + maskgit).
    tiny: "module:function", `tiny(path, seed=0, image_size=32, **kw) -> Path`: a randomly
        initialised tiny model folder that runs every real code path (for tests).
    tiny_modes: mode -> the `tiny` keyword arguments that make a model of that mode (the AR
        family's masked mode: {"objective": "masked"}); the contract tests build one per mode."""

    name: str
    summary: str
    pipeline: str
    samplers: dict[str, tuple[str, ...]]
    tasks: dict[str, str]
    default_task: str
    tiny: str
    prerequisites: dict[str, str] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)
    tiny_modes: dict[str, dict] = field(default_factory=dict)

    def pipeline_class(self):
        return _attr(self.pipeline)

    def load(self, folder, device: str = "cpu", dtype: str = "fp32"):
        """The family's pipeline for a model folder (raises ModelLoadError for a bad folder)."""
        return self.pipeline_class().from_folder(folder, device=device, dtype=dtype)

    def task_class(self, task: str):
        if task not in self.tasks:
            raise UserInputError(f"the {self.name} family has no task {task!r}; choose one of {', '.join(self.tasks)}")
        return _attr(self.tasks[task])

    def make_tiny(self, path, mode: str | None = None, **kw):
        """A random tiny model folder of this family at path (see `tiny` above), of `mode`
        (default: the family's main mode); kw: seed, image_size, ..."""
        return _attr(self.tiny)(path, **{**self.tiny_modes.get(mode or self.name, {}), **kw})

    def sampler_help(self) -> str:
        return "; ".join(f"{mode}: {' | '.join(names)}" for mode, names in self.samplers.items())


# Training-only entries: tasks the one loop runs that make no images, so no pipeline, samplers or
# tiny model (`blinkgen train --family captioner`). They are not generator families: `names()`,
# `blinkgen.load`, the server and the contract tests never see them; `training_target` does.
TRAINERS: dict[str, Family] = {
    "captioner": Family(name="captioner", summary="image -> caption: a small Llama over the evaluator's image "
                        "features (eval/captioner.py)", pipeline="", samplers={},
                        tasks={"captioner": "blinkgen.eval.captioner_task:CaptionerTask"},
                        default_task="captioner", tiny=""),
}


def trainable() -> list[Family]:
    """Every family `blinkgen train --family` takes: the generator families, then TRAINERS."""
    return [*all_families(), *TRAINERS.values()]


def _attr(ref: str):
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


def register(name: str, module: str) -> None:
    """Add a family for this process: `module` (importable) defines FAMILY with FAMILY.name == name."""
    _registered[name] = module


def _extra_from_env() -> dict[str, str]:
    out = {}
    for item in filter(None, (x.strip() for x in os.environ.get(EXTRA_ENV, "").split(","))):
        name, eq, module = item.partition("=")
        if not eq or not name.strip() or not module.strip():
            raise UserInputError(f"{EXTRA_ENV} entries are name=module, got {item!r}")
        out[name.strip()] = module.strip()
    return out


def _table() -> dict[str, str]:
    return {**BUILTIN, **_extra_from_env(), **_registered}


def names() -> list[str]:
    """Every registered family name, built-in ones first."""
    return list(_table())


def get(name: str) -> Family:
    """The Family called name; imports its package (import errors propagate). UserInputError
    for an unknown name."""
    table = _table()
    if name not in table:
        raise UserInputError(f"unknown family {name!r}; known: {', '.join(table)}")
    fam = importlib.import_module(table[name]).FAMILY
    if fam.name != name:
        raise ImportError(f"{table[name]}.FAMILY is named {fam.name!r}, registered as {name!r}")
    return fam


def all_families() -> list[Family]:
    return [get(n) for n in names()]


def sampler_help() -> str:
    """"diffusion: euler | heun | dpmpp2m; ar: ..." over every registered family and mode."""
    return "; ".join(f.sampler_help() for f in all_families())


def training_target(family: str, task: str | None = None) -> tuple[Family, str]:
    """(Family, task name) for `blinkgen train --family F [--task T]`: F is a family name or one
    of a family's aliases (an older spelling that also names the task). UserInputError if unknown."""
    for fam in trainable():
        if family == fam.name:
            t = task or fam.default_task
        elif family in fam.aliases:
            t = fam.aliases[family]
            if task and task != t:
                raise UserInputError(f"--family {family} means the {fam.name} family's {t!r} task, not {task!r}")
        else:
            continue
        if t not in fam.tasks:
            raise UserInputError(f"the {fam.name} family has no task {t!r}; choose one of {', '.join(fam.tasks)}")
        return fam, t
    raise UserInputError(f"family must be one of {', '.join(training_names())}, got {family!r}")


def training_names() -> list[str]:
    """What `train --family` accepts: family names and their aliases."""
    out = []
    for fam in trainable():
        out += [fam.name, *fam.aliases]
    return out
