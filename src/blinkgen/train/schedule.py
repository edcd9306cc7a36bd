"""Learning-rate schedule as a pure function of the step (so resuming needs no scheduler state)."""
import math


def lr_at(step: int, base_lr: float, warmup: int, total: int, min_ratio: float,
          decay_fraction: float = 1.0) -> float:
    """Learning rate of optimizer step `step` (0-based): linear warm-up over `warmup` steps, then
    a cosine from `base_lr` down to `base_lr * min_ratio` at step `total`.

    `decay_fraction` in (0, 1] is the share of the post-warm-up steps the cosine spans. 1.0 is the
    plain cosine (Loshchilov & Hutter 2017, SGDR); below 1 the rate holds at `base_lr` and the
    cosine runs over the last `decay_fraction` of the run only: the warmup-stable-decay ("WSD")
    schedule of Hu et al. 2024 (MiniCPM) and Hägele et al. 2024, which keeps the rate high for
    longer. Steps past `total` stay at the floor. Returns a float (same units as `base_lr`).
    """
    if warmup > 0 and step < warmup:
        return base_lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    progress = max(0.0, (progress - (1 - decay_fraction)) / decay_fraction)
    return base_lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))
