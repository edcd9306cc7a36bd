import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import settings as hypothesis_settings

from blinkgen import families

# One thread everywhere: CI has 2 cores, and results must not depend on thread scheduling.
torch.set_num_threads(1)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# No wall-clock deadline on property tests: hypothesis's default 200 ms per example failed
# test_captions_are_normalised... at 280 ms on a loaded 2-core machine (a first call paying a
# lazy import), a failure of the machine, not the code. Speed is measured in bench/, never in
# unit tests. Every @given test inherits this; a test's own @settings still sets its examples.
hypothesis_settings.register_profile("blinkgen", deadline=None)
hypothesis_settings.load_profile("blinkgen")

CHILD_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
             "TQDM_DISABLE": "1"}

# The test-only "constant colour" family (tests/constant_family) is registered in every test
# process, so the contract tests run it beside the built-in families; subprocesses (the real CLI
# and server) get it through the registry's environment variable, with tests/ on their path.
TESTS_DIR = Path(__file__).resolve().parent
families.register("constant", "constant_family")
_PATH = [str(TESTS_DIR), *(os.path.abspath(p) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p)]
FAMILY_ENV = {**CHILD_ENV, families.EXTRA_ENV: "constant=constant_family", "PYTHONPATH": os.pathsep.join(_PATH)}


def run_cli(*args, check=True, timeout=300, env=None, **kw):
    """Run `blinkgen ...` in a fresh process, as a user would (env: CHILD_ENV unless given)."""
    r = subprocess.run([sys.executable, "-m", "blinkgen.cli", *map(str, args)], capture_output=True, text=True,
                       env=env or CHILD_ENV, timeout=timeout, **kw)
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


def write_pre_protocol_checkpoint(ckpt: Path) -> None:
    """Turn a named-optimizer checkpoint of a one-optimizer task into the layout blinkgen wrote
    before optimizers had names (main before the family-layout change): optimizer.safetensors, and the
    hyperparameters under state.json "optimizer"."""
    state = json.loads((ckpt / "state.json").read_text())
    (meta,) = state.pop("optimizers").values()
    state["optimizer"] = meta
    (ckpt / "state.json").write_text(json.dumps(state))
    (named,) = ckpt.glob("optimizer.*.safetensors")
    named.rename(ckpt / "optimizer.safetensors")
