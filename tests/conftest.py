import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

# One thread everywhere: CI has 2 cores, and results must not depend on thread scheduling.
torch.set_num_threads(1)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

CHILD_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
             "TQDM_DISABLE": "1"}


def run_cli(*args, check=True, timeout=300, **kw):
    """Run `blinkgen ...` in a fresh process, as a user would."""
    r = subprocess.run([sys.executable, "-m", "blinkgen.cli", *map(str, args)], capture_output=True, text=True,
                       env=CHILD_ENV, timeout=timeout, **kw)
    if check and r.returncode != 0:
        raise AssertionError(f"blinkgen {' '.join(map(str, args))} failed ({r.returncode}):\n{r.stderr[-3000:]}")
    return r


def make_tiny(family: str, path, **kw) -> Path:
    """A random tiny model folder of a registered family (the family's own `tiny()` factory):
    every real code path, noise-like images. kw: seed, image_size, and family options
    (the AR family's objective="masked")."""
    from blinkgen.families import get

    return get(family).make_tiny(path, **kw)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return make_tiny("diffusion", tmp_path_factory.mktemp("models") / "tiny")
