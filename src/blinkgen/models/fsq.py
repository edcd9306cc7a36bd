"""Finite scalar quantization (Mentzer et al. 2023, "Finite Scalar Quantization: VQ-VAE Made Simple").

Why FSQ rather than a learned VQ codebook: each latent channel is bounded and rounded to one of
L_i levels, so the codebook is the implicit grid prod(L_i). There is no codebook to collapse, no
commitment loss, no EMA update and no dead-code restarts — a plain autoencoder trained with a
reconstruction loss and a straight-through round. That suits small datasets trained on a CPU.

Conventions: codes are the quantized values scaled to [-1, 1] (what the decoder sees); digits are
the integers 0..L_i-1 per channel; an index is the mixed-radix number of the digits, first channel
least significant (after: lucidrains/vector-quantize-pytorch FSQ, ideas only).
"""
from __future__ import annotations

import math

import torch
from torch import nn

# The bound squeezes z into slightly more than (L-1)/2 on each side so that after rounding every
# one of the L levels is reachable (tanh never reaches its asymptote); FSQ paper, Appendix A.1.
BOUND_EPS = 1e-3


def round_ste(z: torch.Tensor) -> torch.Tensor:
    """Round forward, identity backward (straight-through estimator)."""
    return z + (z.round() - z).detach()


class FSQ(nn.Module):
    """Quantize the last dimension of z (size len(levels)) onto a fixed grid.

    `forward(z) -> (codes, indices)`; codes carry straight-through gradients to z."""

    def __init__(self, levels: tuple[int, ...] | list[int]):
        super().__init__()
        levels = tuple(int(l) for l in levels)
        if not levels or any(l < 2 for l in levels):
            raise ValueError(f"FSQ levels must all be >= 2, got {levels}")
        self.levels_tuple = levels
        lv = torch.tensor(levels, dtype=torch.long)
        basis = torch.cumprod(torch.tensor((1,) + levels[:-1], dtype=torch.long), dim=0)
        # Buffers are derived from the config, so they are not saved (persistent=False).
        self.register_buffer("_levels", lv, persistent=False)
        self.register_buffer("_basis", basis, persistent=False)
        self.register_buffer("_half_width", (lv // 2).float(), persistent=False)

    @property
    def dim(self) -> int:
        return len(self.levels_tuple)

    @property
    def codebook_size(self) -> int:
        return math.prod(self.levels_tuple)

    def bound(self, z: torch.Tensor) -> torch.Tensor:
        """Squash z so that round() lands on L levels: odd L -> {-(L-1)/2..(L-1)/2}, even L ->
        {-L/2..L/2-1} (the half-step offset makes even L symmetric before rounding)."""
        lv = self._levels.to(z.dtype)
        half_l = (lv - 1) * (1 + BOUND_EPS) / 2  # (d,)
        offset = torch.where(self._levels % 2 == 0, 0.5, 0.0).to(z.dtype)  # (d,)
        shift = torch.atanh(offset / half_l)  # (d,)
        return torch.tanh(z + shift) * half_l - offset  # (..., d)

    def quantize(self, z: torch.Tensor) -> torch.Tensor:
        """z (..., d) any real -> codes (..., d) in [-1, 1], straight-through gradient."""
        self._check(z)
        return round_ste(self.bound(z)) / self._half_width.to(z.dtype)  # (..., d)

    def codes_to_digits(self, codes: torch.Tensor) -> torch.Tensor:
        return (codes * self._half_width + self._half_width).round().long()  # (..., d) in [0, L)

    def digits_to_codes(self, digits: torch.Tensor) -> torch.Tensor:
        return (digits.float() - self._half_width) / self._half_width  # (..., d)

    def codes_to_indices(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (..., d) -> indices (...) long in [0, codebook_size)."""
        self._check(codes)
        return (self.codes_to_digits(codes) * self._basis).sum(-1)  # (...)

    def indices_to_codes(self, indices: torch.Tensor) -> torch.Tensor:
        """indices (...) long -> codes (..., d) float32."""
        digits = (indices.long().unsqueeze(-1) // self._basis) % self._levels  # (..., d)
        return self.digits_to_codes(digits)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        codes = self.quantize(z)  # (..., d)
        return codes, self.codes_to_indices(codes.detach())  # (..., d), (...)

    def _check(self, z: torch.Tensor) -> None:
        if z.shape[-1] != self.dim:
            raise ValueError(f"FSQ with levels {self.levels_tuple} expects last dim {self.dim}, "
                             f"got shape {tuple(z.shape)}")

    def extra_repr(self) -> str:
        return f"levels={self.levels_tuple}, codebook_size={self.codebook_size}"
