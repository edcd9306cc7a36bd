"""How many CPU threads a sampling command gives torch: no more than the cores that are idle.

Why: torch splits each operation statically across its intra-op threads and waits for the slowest.
When another process holds one of the cores, the thread that shares it runs only in its time
slices, and every one of the thousands of small operations of a generation waits for it. Measured on
this project's 2-core CPU with one training job running: the embedded default drew an image in
7.5 s at torch's default 2 threads against 0.32 s at 1 thread; with a busy loop holding one core,
0.997 s against 0.334 s. On the idle machine 2 threads were 1.4x faster at batch 1 and 2.2x at
batch 8 (bench/bench_threads.py; bench/RESULTS.md, "CPU threads under load"). Images do not depend on the thread count (bit-identical at 1 and 2 threads;
tests/unit/test_threads.py), so choosing it by load changes only the speed.

An explicit choice always wins: `blinkgen --threads N ...`, or OMP_NUM_THREADS in the environment
(torch reads it at start-up).
"""
from __future__ import annotations

import os

import torch


def idle_cpus(window_s: float = 0.1) -> float:
    """Idle CPUs over the next `window_s` seconds (psutil; 0..os.cpu_count(), fractional)."""
    import psutil

    return sum(100.0 - p for p in psutil.cpu_percent(interval=window_s, percpu=True)) / 100.0


def choose_threads(requested: int | None, most: int, idle: float | None = None) -> int:
    """Threads to use: `requested` when given (>= 1), else the idle CPUs rounded, between 1 and
    `most` (torch's default: its physical cores). ValueError for requested < 1."""
    if requested is not None:
        if requested < 1:
            raise ValueError(f"threads must be at least 1, got {requested}")
        return requested
    idle = idle_cpus() if idle is None else idle
    return max(1, min(most, int(idle + 0.5)))


def apply_threads(requested: int | None) -> int:
    """Set torch's intra-op threads for a sampling command (see the module doc) and return the
    number. Leaves torch alone when OMP_NUM_THREADS is set and nothing was requested."""
    if requested is None and os.environ.get("OMP_NUM_THREADS"):
        return torch.get_num_threads()
    n = choose_threads(requested, torch.get_num_threads())
    torch.set_num_threads(n)
    return n


def busy_cores_warning(most: int, idle: float | None = None) -> str | None:
    """For a training run left at torch's default of `most` threads: a warning naming a --threads
    to pass when fewer cores than that are idle, else None. Training does not choose for itself:
    a resumed run must compute what the uninterrupted one did, and a thread count picked from the
    load of the moment could differ between the two."""
    idle = idle_cpus() if idle is None else idle
    n = choose_threads(None, most, idle)  # what a sampling command would take
    if n >= most:
        return None
    return (f"only {idle:.1f} of the {most} cores torch will use are idle; its threads will wait on the busy "
            f"ones (sampling measured 3x slower at 2 threads with one core busy, bench/RESULTS.md). "
            f"Consider --threads {n}")
