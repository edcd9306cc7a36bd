"""Model folders: `config.json` + `model.safetensors` (+ subfolders), the ecosystem's layout.

Why our own tiny writer: saving must be atomic (a crash mid-write never leaves a half folder
where a good one was) and loading must never unpickle. Writes go to a temp folder beside the
target and are renamed into place; the old folder, if any, is moved aside and deleted after.
"""
from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .errors import InputFileError, ModelLoadError
from .outputs import replacing_folder
from .textio import read_text


def unwrap(module: torch.nn.Module) -> torch.nn.Module:
    """Strip torch.compile / DDP wrappers so saved names never carry `_orig_mod.` or `module.`."""
    while True:
        if hasattr(module, "_orig_mod"):
            module = module._orig_mod
        elif hasattr(module, "module") and isinstance(module.module, torch.nn.Module):
            module = module.module
        else:
            return module


def state_dict_for_save(module: torch.nn.Module, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """The module's state dict on the CPU, contiguous, floating tensors cast to dtype if given.
    A tensor shared by two names (tied embeddings) is copied for the second, since safetensors
    stores no shared memory."""
    sd = unwrap(module).state_dict()
    out, seen = {}, set()
    for k, v in sd.items():
        v = v.detach().cpu()
        if dtype is not None and v.is_floating_point():
            v = v.to(dtype)
        v = v.contiguous()
        if v.numel() and v.data_ptr() in seen:
            v = v.clone()
        seen.add(v.data_ptr())
        out[k] = v
    return out


def write_json_atomic(path: Path, obj) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)


def write_folder_atomic(path: str | Path, files: dict[str, dict | dict[str, torch.Tensor]]) -> Path:
    """files: relative name -> JSON-able dict (for .json) or tensor dict (for .safetensors),
    written into `path` atomically (replacing_folder). Raises ValueError for a name that is
    neither .json nor .safetensors (nothing is written then), OSError if writing fails."""
    path = Path(path)
    with replacing_folder(path) as tmp:
        for rel, content in files.items():
            f = tmp / rel
            f.parent.mkdir(parents=True, exist_ok=True)
            if rel.endswith(".json"):
                f.write_text(json.dumps(content, indent=2, sort_keys=True), encoding="utf-8")
            elif rel.endswith(".safetensors"):
                save_file(content, str(f))
            else:
                raise ValueError(f"unknown file kind: {rel}")
    return path


def read_config(folder: str | Path) -> dict:
    folder = Path(folder)
    cfg = folder / "config.json"
    if not folder.is_dir():
        raise ModelLoadError(f"model folder not found: {folder}")
    if not cfg.is_file():
        raise ModelLoadError(f"{folder} is not a blinkgen model folder: config.json is missing")
    try:  # a byte-order mark from an editor is fine (textio); anything undecodable is corrupt
        return json.loads(read_text(cfg, "model config"))
    except (json.JSONDecodeError, InputFileError) as e:
        raise ModelLoadError(f"{cfg} is corrupt: {e}") from None


def read_tensors(file: str | Path) -> dict[str, torch.Tensor]:
    file = Path(file)
    if not file.is_file():
        raise ModelLoadError(f"weights file missing: {file}")
    try:
        return load_file(str(file))
    except Exception as e:  # safetensors raises several types for a damaged header/body
        raise ModelLoadError(f"weights file {file} is corrupt or not safetensors: {e}") from None


def load_into(module: torch.nn.Module, tensors: dict[str, torch.Tensor], where: str) -> None:
    own = module.state_dict()
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    bad = [k for k in own if k in tensors and own[k].shape != tensors[k].shape]
    if missing or unexpected or bad:
        raise ModelLoadError(f"weights in {where} do not match the config: missing={missing[:5]} "
                             f"unexpected={unexpected[:5]} wrong-shape={bad[:5]}")
    module.load_state_dict({k: v.to(own[k].dtype) for k, v in tensors.items()})


def weights_hash(folder: str | Path) -> str:
    """sha256 (hex) over a model folder's weights: every *.safetensors file under it, in sorted
    order of its relative POSIX path, as path + NUL + bytes. Independent of config edits and
    timestamps; any changed weight, or a swapped autoencoder, changes it. This is what a PNG
    records as `model_hash` and what `blinkgen generate --from` compares."""
    import hashlib

    folder = Path(folder)
    h = hashlib.sha256()
    for f in sorted(folder.rglob("*.safetensors"), key=lambda p: p.relative_to(folder).as_posix()):
        h.update(f.relative_to(folder).as_posix().encode() + b"\0")
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()
