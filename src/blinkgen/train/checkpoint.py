"""Training checkpoints as data: safetensors for tensors, JSON for everything else, never pickle.

Layout: run/checkpoints/step-00001000/{model,ema,optimizer}.safetensors + state.json, each
folder written to a temp name and renamed into place (atomic), then `run/checkpoints/latest`
(a one-line text file) is replaced atomically to point at it. A SIGKILL at any moment leaves
either the previous checkpoint or the new one, never half of one.
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


def save_checkpoint(run: Path, step: int, model, ema_model, opt, state: dict, keep: int = 2) -> Path:
    ckdir = Path(run) / "checkpoints"
    name = f"step-{step:08d}"
    opt_t, opt_meta = optimizer_tensors(opt)
    files = {"model.safetensors": state_dict_for_save(model),
             "state.json": {**state, "step": step, "optimizer": opt_meta}}
    if ema_model is not None:
        files["ema.safetensors"] = state_dict_for_save(ema_model)
    if opt_t:
        files["optimizer.safetensors"] = opt_t
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


def load_checkpoint(path: Path, model, ema_model, opt) -> dict:
    state = json.loads((path / "state.json").read_text())
    model.load_state_dict(read_tensors(path / "model.safetensors"))
    if ema_model is not None and (path / "ema.safetensors").is_file():
        ema_model.load_state_dict(read_tensors(path / "ema.safetensors"))
    opt_file = path / "optimizer.safetensors"
    opt_t = read_tensors(opt_file) if opt_file.is_file() else {}
    load_optimizer(opt, opt_t, state["optimizer"])
    return state
