"""The one seed range and the one rule for the seeds of several images, used by the CLI, the
Python API, the server, eval and training.

- A seed is an integer in [0, SEED_MAX] = [0, 2^63 - 1]: every value fits a signed 64-bit
  integer (JSON parsers, databases, torch's `manual_seed`), and it is what blinkgen writes into a
  PNG's `parameters` chunk, so a seed read back from any image blinkgen made is always accepted.
- The seeds of n images asked for with seed s are s, s+1, ..., s+n-1 -- never wrapped: a run whose
  last seed would pass SEED_MAX is refused with a clear error (wrapping would give a seed that
  the CLI and the server disagree on).
- A seed the caller leaves out is drawn in [0, 2^32): short to type back, and exact in JavaScript
  (whose numbers hold integers exactly only below 2^53).
"""
from __future__ import annotations

import secrets

from .checks import as_int
from .errors import UserInputError

SEED_MAX = 2**63 - 1
RANDOM_SEED_BELOW = 2**32
SEED_RANGE_TEXT = "[0, 2^63 - 1]"


def check_seed(seed, name: str = "seed") -> int:
    """One seed as a Python int in [0, SEED_MAX]; UserInputError otherwise (bool refused,
    numpy integers fine -- see checks.as_int)."""
    return as_int(seed, name, 0, SEED_MAX)


def seed_run(seed, n, name: str = "seed") -> list[int]:
    """The seeds of n images starting at `seed`: [seed, seed+1, ..., seed+n-1].
    UserInputError, leading with `name` (e.g. "variation_seed"), for a seed out of range or when
    the last one would pass SEED_MAX (never wraps)."""
    seed, n = check_seed(seed, name), as_int(n, "n", 0)
    if n and seed + n - 1 > SEED_MAX:
        raise UserInputError(f"{name} {seed} with n={n} needs seeds up to {seed + n - 1}, past the largest "
                             f"seed {SEED_MAX} (2^63 - 1); start at {SEED_MAX - n + 1} or below")
    return list(range(seed, seed + n))


def random_seed() -> int:
    """A fresh seed for a caller who gave none (see the module doc for the range)."""
    return secrets.randbelow(RANDOM_SEED_BELOW)


def torch_seed(value: int) -> int:
    """A seed derived by arithmetic (seed * k + step, ...) brought into `torch.manual_seed`'s
    range [0, 2^64) -- the identity below 2^64, so small seeds keep their streams exactly."""
    return int(value) % 2**64
