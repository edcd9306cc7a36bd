"""Learning-rate schedule as a pure function of the step (so resuming needs no scheduler state)."""
import math


def lr_at(step: int, base_lr: float, warmup: int, total: int, min_ratio: float) -> float:
    if warmup > 0 and step < warmup:
        return base_lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return base_lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))
