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


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    from blinkgen.testing import tiny_model

    return tiny_model(tmp_path_factory.mktemp("models") / "tiny")
