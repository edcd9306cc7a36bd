"""What `blinkgen finetune` tells its user: a LoRA adapter (or its run folder) given as --from is
refused in one line that says whose adapter it is and what to pass instead (its base, --resume on
its run, or --merge), not "family must be one of ..."; a short run's EMA warning names no flag
finetune does not have (it has no --ema-decay), while `blinkgen train` keeps naming its flags.

A real two-step fine-tune runs once, in this process, through the real CLI (cli.main) on a tiny
random model."""
from __future__ import annotations

import json
import logging
import shutil
import sys
from pathlib import Path

import pytest

from blinkgen import cli
from blinkgen.api import WEIGHTS_DIR
from blinkgen.errors import UserInputError
from blinkgen.train import lora
from blinkgen.train.ema import short_run_warnings
from conftest import make_tiny

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import mascot  # noqa: E402  (bench/mascot.py: a procedural concept folder)

FT = ["--steps", "2", "--batch-size", "2", "--eval-every", "2", "--sample-every", "0", "--threads", "1",
      "--rank", "2"]


def blinkgen(*argv) -> int:
    return cli.main([str(a) for a in argv])


class Lines(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("finetune-messages")
    base = make_tiny("diffusion", root / "base", seed=0)
    data = mascot.make_folder(root / "pics", n=4, size=32)
    out = root / "runs" / "zorbo"
    caught = Lines()
    logging.getLogger("blinkgen").addHandler(caught)
    try:
        assert blinkgen("finetune", "--from", base, "--data", data, "--out", out, *FT) == 0
    finally:
        logging.getLogger("blinkgen").removeHandler(caught)
    return {"root": root, "base": base, "data": data, "out": out, "warnings": caught.lines}


# --- a short run's EMA warning ------------------------------------------------------------------
def test_finetune_has_no_ema_flag(run, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["finetune", "--from", str(run["base"]), "--data", str(run["data"]), "--out", "x",
                  "--ema-decay", "0.5"])
    assert e.value.code == 2 and "unrecognized arguments: --ema-decay" in capsys.readouterr().err


def test_a_short_finetune_warns_without_naming_a_flag_it_lacks(run):
    ema = [w for w in run["warnings"] if "EMA" in w]
    assert ema == ["the EMA decay 0.99 is reached only at step 890: with 2 steps the EMA ends at decay 0.18182, "
                   "so the exported adapter averages about the last ninth of the steps (the EMA's warm-up)"]
    assert not any("--ema" in w for w in run["warnings"])


def test_the_train_wording_still_names_its_flags():
    assert short_run_warnings(2, 0.99, []) == [
        "--ema-decay 0.99 is reached only at step 890: with 2 steps the EMA ends at decay 0.18182 (its warm-up, "
        "about the last ninth of the steps)"]
    lines = short_run_warnings(3800, 0.999, [0.9995], export="adapter")
    assert lines[0].startswith("the EMA decay 0.999 is reached only at step 8,990: with 3,800 steps")
    assert lines[1] == "the EMA decay 0.9995 will export the same weights as 0.999"
    assert not any("--" in line for line in lines)
    assert short_run_warnings(20000, 0.999, [0.9995], export="adapter") == []


# --- an adapter given as the base ---------------------------------------------------------------
def test_finetune_from_an_adapter_says_what_to_pass_instead(run, capsys):
    adapter = run["out"] / "model"
    for given, what in ((adapter, "is a LoRA adapter of 'base'"),
                        (run["out"], f"is a LoRA fine-tuning run (adapter in {adapter}) of 'base'")):
        assert blinkgen("finetune", "--from", given, "--data", run["data"], "--out", run["root"] / "f4b",
                        "--steps", "5") == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "Traceback" not in err and "family must be" not in err, err
        assert f"error: {given} {what}, not a model to fine-tune" in err
        assert f"(--from {run['base'].resolve()})" in err  # its base
        assert f"--out {run['out']} --resume" in err  # continue that adapter's run
        assert f"--merge writes {run['out'] / 'merged'}" in err  # or fold it into a model
    assert not (run["root"] / "f4b").exists()


def test_a_merged_run_is_offered_as_the_base(run, tmp_path, capsys):
    out = tmp_path / "merged-run"
    shutil.copytree(run["out"], out)
    shutil.copytree(run["base"], out / "merged")  # what finetune --merge leaves there: a model folder
    assert blinkgen("finetune", "--from", out / "model", "--data", run["data"], "--out", tmp_path / "f",
                    "--steps", "5") == 2
    assert f"fine-tune from its merged model (--from {out / 'merged'})" in capsys.readouterr().err


def test_a_bare_adapter_of_an_embedded_model_names_it(tmp_path):
    """An adapter folder outside a run (copied, downloaded) of the embedded 'default': --from default."""
    ad = tmp_path / "mascot"
    ad.mkdir()
    for f in (lora.ADAPTER_WEIGHTS, lora.ADAPTER_CONFIG):
        (ad / f).write_bytes(b"{}")
    base = {"family": "diffusion", "name": "default", "path": str((WEIGHTS_DIR / "default").resolve()),
            "weights_sha256": "0" * 64}
    (ad / "config.json").write_text(json.dumps({"family": "lora", "base": base, "network": "denoiser"}))
    with pytest.raises(UserInputError) as e:
        lora.resolve_base(str(ad))  # what the training task resolves too (a TrainConfig from Python)
    msg = str(e.value)
    assert "\n" not in msg and f"{ad} is a LoRA adapter of 'default'" in msg and "(--from default)" in msg
    assert "--resume on the run folder that made it" in msg and "--merge" in msg


def test_distill_from_an_adapter_is_one_line(run, capsys):
    """Regression: `distill --from <adapter>` crashed with KeyError: 'image_size'."""
    for given in (run["out"] / "model", run["out"]):
        assert blinkgen("distill", "--from", given, "--out", run["root"] / "d", "--steps", "2") == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "is a LoRA adapter, not a model to distil" in err and "--merge" in err, err
    assert not (run["root"] / "d").exists()


def test_resume_with_another_rank_is_one_line(run, capsys):
    """Regression: `finetune --resume` with another --rank than the run's died in load_state_dict
    with a size-mismatch RuntimeError traceback."""
    args = ["finetune", "--from", run["base"], "--data", run["data"], "--out", run["out"], *FT[:-2]]
    assert blinkgen(*args, "--rank", "4", "--resume") == 2
    err = capsys.readouterr().err.strip()
    last = err.splitlines()[-1]  # after the plan line finetune prints first
    assert "Traceback" not in err and last.startswith("error: --resume:") and "--rank 2 there, 4 now" in last, err
