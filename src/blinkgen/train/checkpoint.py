"""Training checkpoints as data: safetensors for tensors, JSON for everything else, never pickle.

Layout: run/checkpoints/step-00001000/ holds model.safetensors, ema.safetensors, one
optimizer.<name>.safetensors per named optimizer of the task (train/task.py: "model" for a
single-optimizer task; a GAN's "generator" and "discriminator") and state.json (step, best,
config, and each optimizer's hyperparameters under "optimizers"). Each folder is written to a temp
name and renamed into place (atomic), then `run/checkpoints/latest` (a one-line text file) is
replaced atomically to point at it. A SIGKILL at any moment leaves either the previous checkpoint
or the new one, never half of one.

Checkpoints written before optimizers had names (one optimizer.safetensors, its hyperparameters
under state.json "optimizer") still resume: they are read as the task's single optimizer.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from ..errors import ModelLoadError
from ..modelio import read_tensors, state_dict_for_save, write_folder_atomic

LATEST = "latest"


def optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Flatten an optimizer's state into named tensors + JSON-able hyperparameters."""
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict] = {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"{pid}.{k}"] = v.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(pid), {})[k] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def load_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict[int, dict] = {}
    for name, v in tensors.items():
        pid, k = name.split(".", 1)
        state.setdefault(int(pid), {})[k] = v
    for pid, sc in meta.get("scalars", {}).items():
        state.setdefault(int(pid), {}).update(sc)
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def _named(optimizers) -> dict[str, torch.optim.Optimizer]:
    from .task import DEFAULT_OPTIMIZER

    return dict(optimizers) if isinstance(optimizers, dict) else {DEFAULT_OPTIMIZER: optimizers}


def save_checkpoint(run: Path, step: int, model, ema_model, optimizers, state: dict, keep: int = 2,
                    extra_emas: dict | None = None) -> Path:
    """optimizers: {name: optimizer} (or one optimizer, named "model"); extra_emas: {decay string:
    module}, EMAs of other lengths (ema.<decay>.safetensors). Keeps the `keep` newest."""
    ckdir = Path(run) / "checkpoints"
    name = f"step-{step:08d}"
    files: dict = {"model.safetensors": state_dict_for_save(model)}
    metas = {}
    for opt_name, opt in _named(optimizers).items():
        opt_t, metas[opt_name] = optimizer_tensors(opt)
        if opt_t:
            files[f"optimizer.{opt_name}.safetensors"] = opt_t
    files["state.json"] = {**state, "step": step, "optimizers": metas}
    if ema_model is not None:
        files["ema.safetensors"] = state_dict_for_save(ema_model)
    for k, m in (extra_emas or {}).items():
        files[f"ema.{k}.safetensors"] = state_dict_for_save(m)
    path = write_folder_atomic(ckdir / name, files)
    tmp = ckdir / f".{LATEST}.tmp"
    tmp.write_text(name + "\n")
    os.replace(tmp, ckdir / LATEST)
    old = sorted(p for p in ckdir.glob("step-*") if p.is_dir() and p.name != name)
    for p in old[: max(0, len(old) - (keep - 1))]:
        shutil.rmtree(p, ignore_errors=True)
    return path


def latest_checkpoint(run: Path) -> Path | None:
    ptr = Path(run) / "checkpoints" / LATEST
    if not ptr.is_file():
        return None
    p = ptr.parent / ptr.read_text().strip()
    if not (p / "state.json").is_file():
        raise ModelLoadError(f"checkpoint pointer {ptr} names {p}, which is incomplete")
    return p


def load_checkpoint(path: Path, model, ema_model, optimizers, extra_emas: dict | None = None) -> dict:
    """Restore model, EMA and every named optimizer from a checkpoint folder; returns state.json.
    extra_emas {decay string: module}: restored where the checkpoint has them, else started from
    the restored main EMA (an EMA added to a running run). ModelLoadError if the checkpoint's
    optimizer names are not the task's."""
    path = Path(path)
    state = json.loads((path / "state.json").read_text())
    opts = _named(optimizers)
    if "optimizers" in state:
        metas = state["optimizers"]
        files = {n: path / f"optimizer.{n}.safetensors" for n in metas}
    else:  # before named optimizers: one optimizer.safetensors + state["optimizer"]
        if len(opts) != 1:
            raise ModelLoadError(f"{path} holds one unnamed optimizer; this task has {len(opts)}: {', '.join(opts)}")
        only = next(iter(opts))
        metas, files = {only: state["optimizer"]}, {only: path / "optimizer.safetensors"}
    if set(metas) != set(opts):
        raise ModelLoadError(f"{path} holds optimizers {sorted(metas)}; this task has {sorted(opts)}")
    model.load_state_dict(read_tensors(path / "model.safetensors"))
    if ema_model is not None and (path / "ema.safetensors").is_file():
        ema_model.load_state_dict(read_tensors(path / "ema.safetensors"))
    for k, m in (extra_emas or {}).items():
        f = path / f"ema.{k}.safetensors"
        src = f if f.is_file() else path / "ema.safetensors"
        if src.is_file():
            m.load_state_dict(read_tensors(src))
    for n, opt in opts.items():
        load_optimizer(opt, read_tensors(files[n]) if files[n].is_file() else {}, metas[n])
    return state
