"""LoRA adapters for tests, made in a second without training (tests that are not about
fine-tuning itself: replaying, recording, refusing)."""
from __future__ import annotations

import copy
from pathlib import Path

import torch

KINDS = {"diffusion": "denoiser", "ar": "ar"}  # a family -> the network kind train/lora.py adapts


def make_adapter(base, folder, seed: int = 0, rank: int = 2) -> Path:
    """A LoRA adapter of the model folder `base`, written to `folder` (replacing what is there, as
    a new fine-tune into the same --out does): peft's wrap of the base's generator network with A
    and B drawn from `seed` (a fresh adapter's B is zero, which would change no pixel)."""
    import blinkgen
    from blinkgen.train import lora

    pipe = blinkgen.load(str(base))
    net = copy.deepcopy(getattr(pipe, pipe.lora_network))
    with torch.random.fork_rng(devices=[]):  # wrap draws A from the global generator
        torch.manual_seed(seed)
        pm = lora.wrap(net, KINDS[pipe.family], rank=rank)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in pm.modules():
            if hasattr(m, "lora_B") and "default" in m.lora_B:
                w = m.lora_B["default"].weight
                w.copy_(torch.randn(w.shape, generator=g) * 0.05)
    return lora.save_adapter(pm, folder, lora.base_record(base, pipe.family), KINDS[pipe.family])
