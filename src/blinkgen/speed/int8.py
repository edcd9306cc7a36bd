"""Speed device: int8 weights for the Llama's decode view (dynamic quantisation).

Takes a `Llama` or a decode view of one and returns a new view with the same decode interface
(`cfg`, `embed`, `head`, `forward_cached`); the source is untouched. Measured in bench/bench_ar.py.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .fused_llama import FusedLlama, fused_view


def int8_view(net) -> FusedLlama:
    """An int8 copy of a Llama's decode view: every Linear inside the decoder blocks becomes a
    dynamically quantised one (`torch.ao.quantization.quantize_dynamic`: int8 weights with one
    scale per output channel, so fusing q/k/v into one matrix costs no precision; activations
    quantised per call; fbgemm kernels on x86). The embedding and lm_head stay
    in the float dtype, so the final logits are not computed from int8 weights. Decode speed at
    batch 1-2 is bound by reading weights, which int8 makes 4x smaller; the price is a small
    change in the logits, which the bench measures (greedy agreement, max logit difference).
    Takes a Llama or a FusedLlama; returns a new module (the source is untouched)."""
    import copy
    import warnings

    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    q = copy.deepcopy(fused_view(net))
    with warnings.catch_warnings():
        # torch.ao's eager quantization and quantized tensors are deprecated in favour of torchao
        # (not a dependency here); the API still works in this torch and is what this rung measures.
        warnings.filterwarnings("ignore", message=".*(torchao|deprecated).*")
        q.layers = quantize_dynamic(q.layers, {nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8)
    return q.eval()
