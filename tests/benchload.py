"""Load a script from bench/ as a module (bench/ is not a package), for the tests that run the
benchmarks end to end on tiny models."""
from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def load_bench(name: str):
    """bench/<name>.py as a fresh module."""
    spec = importlib.util.spec_from_file_location(f"blinkgen_bench_{name}", ROOT / "bench" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
