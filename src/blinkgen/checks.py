"""Validation of the numbers the public API takes, in one place, so every argument accepts the
same things and every error reads the same way.

An integer argument accepts anything integral -- `int`, `numpy.int64`, a 0-d integer tensor,
any object with `__index__` (`operator.index`, PEP 357) -- and refuses `bool` (True is not a
count) and floats, even 5.0 (a float step count is almost always a bug upstream). A number
argument accepts any real number (`numbers.Real`: int, float, numpy floats) except bool, NaN
and infinities. Errors are UserInputError naming the argument and its range.
"""
from __future__ import annotations

import argparse
import math
import numbers
import operator

from .errors import UserInputError


def _range_text(lo, hi) -> str:
    if lo is not None and hi is not None:
        return f" between {lo} and {hi}"
    if lo is not None:
        return f" >= {lo}"
    if hi is not None:
        return f" <= {hi}"
    return ""


def as_int(value, name: str, lo: int | None = None, hi: int | None = None) -> int:
    """`value` as a Python int in [lo, hi] (either bound optional); UserInputError otherwise."""
    want = f"{name} must be an integer{_range_text(lo, hi)}"
    if isinstance(value, bool) or type(value).__name__ == "bool_":  # numpy.bool_ has no __index__ either
        raise UserInputError(f"{want}, got {value!r}")
    try:
        v = operator.index(value)
    except TypeError:
        raise UserInputError(f"{want}, got {value!r}") from None
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise UserInputError(f"{name} must be{_range_text(lo, hi)}, got {v}")
    return v


def as_float(value, name: str, lo: float | None = None, hi: float | None = None) -> float:
    """`value` as a finite Python float in [lo, hi] (either bound optional); UserInputError
    otherwise. 0-d tensors and numpy scalars are accepted through `numbers.Real` or `.item()`."""
    want = f"{name} must be a number{_range_text(lo, hi)}"
    if hasattr(value, "item") and getattr(value, "shape", None) == ():  # numpy / torch 0-d
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise UserInputError(f"{want}, got {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise UserInputError(f"{want}, got {v}")
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise UserInputError(f"{name} must be{_range_text(lo, hi)}, got {v}")
    return v


def positive_int_arg(s: str) -> int:
    """argparse type: an integer >= 1 (argparse.ArgumentTypeError otherwise, its usage error)."""
    v = int(s)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {s}")
    return v


THREADS_TRAINING_HELP = "torch's intra-op CPU threads, N >= 1; 0 or left out: torch's default"


def threads_arg(s: str) -> int:
    """argparse type of every --threads (the top level's, train's, finetune's, distill's): a whole
    number of threads >= 0, where 0 means the command's default, exactly as leaving the flag out
    (the top level: the idle cores, speed/threads.py; training: torch's default, TrainConfig's
    threads 0). argparse.ArgumentTypeError (its usage error, one line) otherwise."""
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of threads (0 = the default), got {s!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0 (0 = the default), got {s}")
    return v


def check_device(device) -> str:
    """A torch device string ("cpu", "cuda", "cuda:1", "mps") that this torch build can use ->
    the same string. UserInputError (one line) for a name torch does not know, or for a device
    this build or machine lacks (the CPU wheel has no CUDA: see the README's GPU install)."""
    import torch

    name = str(device)
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        raise UserInputError(f"unknown device {name!r}; use cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = "it is the CPU build" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise UserInputError(f"device {name!r}: this torch ({torch.__version__}) cannot use CUDA: {why}; "
                                 "see the README's GPU install, or use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UserInputError(f"device {name!r}: only {torch.cuda.device_count()} CUDA device(s) here")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise UserInputError(f"device {name!r}: MPS is not available on this machine; use --device cpu")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise UserInputError(f"device {name!r}: blinkgen runs on cpu, cuda or mps")
    return name
