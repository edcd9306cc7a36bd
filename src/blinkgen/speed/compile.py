"""Speed device: `torch.compile` of the AR decode step (after: gpt-fast, LlamaGen).

`compiled_step()` returns a function with exactly the signature and results of
`sampling.ar.decode_one_token`, so `sampling.ar.decode(..., step=compiled_step())` runs it
unchanged. fullgraph=True makes a graph break an error instead of a silent slow path (STYLE: fail
loudly). The first call pays the compile (seconds; bench/bench_ar.py records it).
"""
from __future__ import annotations

from typing import Callable

import torch

from ..sampling.ar import decode_one_token

_COMPILED: dict[tuple, Callable] = {}


def compiled_step(backend: str = "inductor", mode: str | None = None) -> Callable:
    """`decode_one_token` under torch.compile(fullgraph=True), built once per process and backend;
    mode="reduce-overhead" adds CUDA graphs on a GPU."""
    key = (backend, mode)
    if key not in _COMPILED:
        _COMPILED[key] = torch.compile(decode_one_token, fullgraph=True, backend=backend, mode=mode)
    return _COMPILED[key]
