"""Bit-exact batch invariance on CPU: a sample's bytes must not depend on how many other samples
share its network call (the pipeline contract; the server batches, `--prompts-file` batches
across prompts). Measured on this project's CPU build (torch 2.13, MKL 2024.2, oneDNN 3.12,
AVX-512), the kernels break that promise in exactly two places, both at very small batches:

- `nn.Linear` on fewer than 4 rows: MKL's sgemm takes a small-M path for M <= 3 whose
  accumulation order differs from M >= 4, so row i of a 2-row product differs in the last bit
  from the same row inside an 8-row product. The DiT's conditioning MLPs (timestep, pooled text,
  adaLN modulation) run on B or 2B rows, so a single image (2 rows with CFG) differs from the same
  image in a batch of 8 (16 rows); after the ODE solve and the decoder, about 1 image in 4 of the
  default model had a pixel 1/255 off.
- `nn.Conv2d` on a batch of 1: oneDNN picks another algorithm than for batches >= 2 (the DiT's
  patch embedding, every autoencoder convolution).

`stabilise(module)` makes every Linear and Conv2d inside `module` pad its input to at least
MIN_LINEAR_ROWS rows / MIN_CONV_BATCH images (zeros; rows never mix, so the padding changes no
real row) and drop the padding from the output. Tokens already have many rows (B x tokens), so
only the small conditioning MLPs and batch-1 convolutions pay, a few per cent of a step.
The diffusion pipeline stabilises its DiT and autoencoder. tests/unit/test_batch_invariance.py
checks the padded layers; the contract tests (tests/contract/test_contract.py and, at guidance 4,
test_contract_everyday.py) check whole pipelines, so a kernel or library change that breaks the
promise in another place fails there rather than in a user's grid.
"""
from __future__ import annotations

import types

import torch
import torch.nn.functional as F
from torch import nn

MIN_LINEAR_ROWS = 4  # MKL sgemm: M <= 3 rounds differently from M >= 4 (measured above)
MIN_CONV_BATCH = 2  # oneDNN convolution: batch 1 rounds differently from batches >= 2


def _linear_forward(self, x: torch.Tensor) -> torch.Tensor:
    rows = x.numel() // max(x.shape[-1], 1)
    if rows >= MIN_LINEAR_ROWS or x.dim() == 0:
        return F.linear(x, self.weight, self.bias)
    flat = x.reshape(rows, x.shape[-1])  # (M, D)
    padded = torch.cat([flat, flat.new_zeros(MIN_LINEAR_ROWS - rows, x.shape[-1])])  # (4, D)
    return F.linear(padded, self.weight, self.bias)[:rows].reshape(*x.shape[:-1], -1)


def _conv_forward(self, x: torch.Tensor) -> torch.Tensor:
    if x.dim() != 4 or x.shape[0] >= MIN_CONV_BATCH:
        return self._conv_forward(x, self.weight, self.bias)
    B = x.shape[0]
    padded = torch.cat([x, x.new_zeros(MIN_CONV_BATCH - B, *x.shape[1:])])  # (2, C, H, W)
    return self._conv_forward(padded, self.weight, self.bias)[:B]


def stabilise(module: nn.Module) -> nn.Module:
    """Give every nn.Linear and nn.Conv2d in `module` (itself included) the padded forward above,
    as an instance attribute: parameters, names and checkpoints are untouched. Returns module."""
    for m in module.modules():
        if type(m) is nn.Linear:
            m.forward = types.MethodType(_linear_forward, m)
        elif type(m) is nn.Conv2d:
            m.forward = types.MethodType(_conv_forward, m)
    return module
