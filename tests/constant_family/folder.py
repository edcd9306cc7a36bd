"""The constant family's network and model folder: config.json + model.safetensors."""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from blinkgen.errors import ModelLoadError
from blinkgen.modelio import load_into, read_config, read_tensors, state_dict_for_save, write_folder_atomic
from blinkgen.text.encoder import TEXT_DIM

HIDDEN = {"tiny": 16, "S": 64}  # presets: hidden width
DEFAULTS = {"steps": 1, "guidance": 1.0, "sampler": "flat"}


class ColourNet(nn.Module):
    """pooled (B, 384) -> colour (B, 3) in (0, 1): Linear, GELU, Linear, sigmoid."""

    def __init__(self, hidden: int):
        super().__init__()
        self.hidden = hidden
        self.net = nn.Sequential(nn.Linear(TEXT_DIM, hidden), nn.GELU(), nn.Linear(hidden, 3))

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(pooled))


def save_folder(path, net: ColourNet, image_size: int, extra: dict | None = None) -> Path:
    config = {"family": "constant", "hidden": net.hidden, "image_size": image_size,
              "defaults": dict(DEFAULTS), **(extra or {})}
    return write_folder_atomic(path, {"config.json": config, "model.safetensors": state_dict_for_save(net)})


def load_folder(folder) -> tuple[ColourNet, dict]:
    folder = Path(folder)
    config = read_config(folder)
    if not isinstance(config.get("hidden"), int):
        raise ModelLoadError(f"{folder}/config.json has no integer 'hidden'")
    net = ColourNet(config["hidden"])
    load_into(net, read_tensors(folder / "model.safetensors"), str(folder))
    return net.eval(), config


def tiny(path, seed: int = 0, image_size: int = 32) -> Path:
    torch.manual_seed(seed)
    return save_folder(path, ColourNet(HIDDEN["tiny"]), image_size)
