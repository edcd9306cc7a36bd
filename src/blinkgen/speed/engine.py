"""Speed devices for the diffusion family's networks: precision (bf16, int8) and torch.compile, for
the denoiser and the autoencoder's decoder. Each takes a network and returns one with the same
call interface (and `cfg`), leaving the source untouched; `apply_engine(pipe, spec)` swaps them
into a loaded DiffusionPipeline for inference (never save a pipeline after that: its networks are
views). Which of them pays on a given CPU is measured, not assumed: bench/bench_blink.py times each
against fp32 at batch 1 and 64 and scores the images they make (bench/RESULTS.md).

    int8      dynamic quantisation of every nn.Linear (torch.ao: int8 weights, one scale per output
              channel; activations quantised per call; fbgemm kernels on x86)
    bf16      weights and activations in bfloat16 (native matmuls on AVX512-BF16 / AMX CPUs)
    compile   torch.compile (inductor) of the forward; the first calls pay the compile (seconds,
              recorded by the bench as the warm-up cost), shapes are specialised per batch size
A spec joins parts with "+", e.g. "bf16+compile" or "int8+decoder-bf16"; parts that start with
"decoder-" apply to the decoder, the others to the denoiser.
"""
from __future__ import annotations

import copy
import warnings

import torch
import torch.nn as nn

from ..errors import UserInputError

PARTS = ("fp32", "bf16", "int8", "compile")


def int8_dynamic(module: nn.Module) -> nn.Module:
    """A copy of `module` whose nn.Linear layers are dynamically quantised to int8."""
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    q = copy.deepcopy(module).float()
    with warnings.catch_warnings():  # torch.ao eager quantisation is deprecated for torchao (not a dependency)
        warnings.filterwarnings("ignore", message=".*(torchao|deprecated).*")
        return quantize_dynamic(q, {nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8).eval()


class Cast(nn.Module):
    """Runs `module` with its floating inputs cast to `dtype` and returns float32: the precision
    policy's boundary (STYLE habit 3) around a network copy kept in another precision. Attribute
    reads the wrapper does not have (`cfg`, `blocks`, `embed`, ...) go to the wrapped network."""

    def __init__(self, module: nn.Module, dtype: torch.dtype):
        super().__init__()
        self.inner, self.dtype = module, dtype

    def forward(self, *args, **kw):
        cast = lambda a: a.to(self.dtype) if torch.is_tensor(a) and a.is_floating_point() else a  # noqa: E731
        out = self.inner(*[cast(a) for a in args], **{k: cast(v) for k, v in kw.items()})
        return out.float()

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["inner"], name)


class DecoderView(nn.Module):
    """An autoencoder's `decode` on a converted copy of its decoder (the encoder is not kept):
    decode(z) -> pixels in [-1, 1], float32. `cfg` is the autoencoder's."""

    def __init__(self, ae: nn.Module, convert):
        super().__init__()
        self.cfg = ae.cfg
        self.decoder = convert(copy.deepcopy(ae.decoder))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z / self.cfg.latent_scale).float()


def convert(module: nn.Module, part: str) -> nn.Module:
    """One engine part applied to a network (see the module doc)."""
    if part == "fp32":
        return module
    if part == "bf16":
        return Cast(copy.deepcopy(module).to(torch.bfloat16), torch.bfloat16)
    if part == "int8":
        return int8_dynamic(module)
    if part == "compile":
        return torch.compile(module, dynamic=False)
    raise UserInputError(f"unknown engine part {part!r}; choose from {', '.join(PARTS)} (decoder-<part> for the decoder)")


def parse_engine(spec: str) -> tuple[list[str], list[str]]:
    """"bf16+compile+decoder-bf16" -> (denoiser parts, decoder parts), each checked."""
    den, dec = [], []
    for part in filter(None, (p.strip() for p in spec.split("+"))):
        target, name = (dec, part.removeprefix("decoder-")) if part.startswith("decoder-") else (den, part)
        if name not in PARTS:
            raise UserInputError(f"unknown engine part {part!r}; choose from {', '.join(PARTS)} "
                                 "(decoder-<part> for the decoder), joined by '+'")
        target.append(name)
    return den, dec


def apply_engine(pipe, spec: str):
    """Swap converted copies of `pipe`'s denoiser and decoder in (inference only); returns pipe.
    The denoiser must be in fp32 as loaded (the parts pick their own precision)."""
    den, dec = parse_engine(spec)
    for part in den:
        if part == "bf16":  # the pipeline's own precision policy: it casts the inputs, returns fp32
            pipe.dit = copy.deepcopy(pipe.dit).to(torch.bfloat16)
            pipe.dtype = torch.bfloat16
        else:
            pipe.dit = convert(pipe.dit, part)
    if dec:
        def chain(m):
            for part in dec:
                m = convert(m, part)
            return m
        pipe.ae = DecoderView(pipe.ae, chain)
    return pipe
