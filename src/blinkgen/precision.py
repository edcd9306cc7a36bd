"""The one precision policy (STYLE.md habit 3): a single string -> dtype map.

Sampler state stays in float32; the network runs in the chosen dtype; outputs are cast back
to float32 at the boundary."""
import torch

from .errors import UserInputError

DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
}


def dtype_of(name: str) -> torch.dtype:
    try:
        return DTYPES[name]
    except KeyError:
        raise UserInputError(f"unknown precision {name!r}; choose one of {sorted(DTYPES)}") from None
