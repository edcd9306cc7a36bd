"""`blinkgen distill` end to end on a tiny model, through the real CLI: the result is a normal
diffusion model folder (loads, generates with the same bytes per seed, runs at guidance 1 on the
Euler solver with its K steps, records the folded guidance and its teacher), the teacher is left
as it was, and the shortcut student starts as its teacher exactly."""
import hashlib
import json
from pathlib import Path

import pytest
import torch

from conftest import run_cli

pytestmark = pytest.mark.slow


def sha(folder: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(folder.rglob("*")):
        if f.is_file():
            h.update(f.read_bytes())
    return h.hexdigest()


def distill(teacher, out, objective="shortcut", steps=2):
    return run_cli("distill", "--from", teacher, "--data", "shapes:32", "--out", out, "--objective", objective,
                   "--steps", steps, "--base-steps", 8, "--train-steps", 4, "--batch-size", 8,
                   "--eval-every", 2, "--ckpt-every", 2, "--self-consistency-fraction", 0.5)


@pytest.mark.parametrize("objective", ["shortcut", "consistency"])
def test_distill_writes_a_normal_few_step_model(tmp_path, tiny_model_dir, objective):
    import blinkgen

    before = sha(tiny_model_dir)
    r = distill(tiny_model_dir, tmp_path / "run", objective)
    folder = Path(r.stdout.strip().splitlines()[-1])
    assert folder == tmp_path / "run" / "model" and sha(tiny_model_dir) == before
    cfg = json.loads((folder / "config.json").read_text())
    teacher = json.loads((tiny_model_dir / "config.json").read_text())
    assert cfg["defaults"] == {"steps": 2, "guidance": 1.0, "sampler": "euler"}
    assert cfg["distilled"]["guidance"] == teacher["defaults"]["guidance"]
    assert cfg["distilled"]["objective"] == objective and Path(cfg["distilled"]["teacher"]) == tiny_model_dir.resolve()
    assert cfg["dit"].get("step_size_cond", False) is (objective == "shortcut")
    hist = [json.loads(line) for line in (tmp_path / "run" / "val_history.jsonl").read_text().splitlines()]
    assert {"val_loss", "val_mse_1step", "val_mse_2step"} <= set(hist[-1])
    pipe = blinkgen.load(str(folder))
    res = pipe.sample([blinkgen.Request("a red circle", 3)], pipe.settings())
    assert res.network_calls == [2]  # K passes, guidance folded in: one pass per step
    out = tmp_path / "a.png"
    run_cli("generate", "a red circle", "--model", folder, "--seed", 3, "-o", out)
    again = tmp_path / "b.png"
    run_cli("generate", "a red circle", "--model", folder, "--seed", 3, "-o", again)
    assert out.read_bytes() == again.read_bytes()


def test_distill_refuses_bad_requests_in_one_line(tmp_path, tiny_model_dir):
    for args, word in [(("--steps", 3), "power of 2"), (("--steps", 64), "up to distill_base_steps"),
                       (("--objective", "reflow"), "invalid choice"), (("--mix", "0.5,0.5"), "order group")]:
        r = run_cli("distill", "--from", tiny_model_dir, "--data", "shapes:8", "--out", tmp_path / "x", *args,
                    check=False)
        assert r.returncode == 2 and word in r.stderr, r.stderr
    r = run_cli("distill", "--from", tiny_model_dir, "--out", tmp_path / "x", check=False)  # no recorded data
    assert r.returncode == 2 and "--data" in r.stderr.strip().splitlines()[-1]


def test_distill_takes_the_group_order_and_mix(tmp_path, tiny_model_dir):
    """--order group --mix sets a source's share without changing the spec (whose held-out split a
    bigger spec would move: eval/leakage.py); the run records both."""
    run_cli("distill", "--from", tiny_model_dir, "--data", "shapes:16+shapes:16", "--out", tmp_path / "run",
            "--order", "group", "--mix", "0.2,0.8", "--train-steps", 2, "--batch-size", 4, "--base-steps", 8,
            "--eval-every", 2, "--ckpt-every", 2)
    cfg = json.loads((tmp_path / "run" / "train_config.json").read_text())
    assert (cfg["order"], cfg["mix"], cfg["task"]) == ("group", "0.2,0.8", "distill")


def test_the_shortcut_student_starts_as_its_teacher(tmp_path, tiny_model_dir):
    """At step 0 the student is the teacher plus a zero step-size embedding: at guidance 1 and
    d = 0 its loss against the teacher is exactly zero, and with guidance folded in it is not."""
    from blinkgen.data.registry import load_dataset
    from blinkgen.families.diffusion.distill import DistillTask
    from blinkgen.train.config import TrainConfig
    from blinkgen.train.loop import split

    data = load_dataset("shapes:16", 32)
    losses = {}
    for w in (1.0, 4.0):
        cfg = TrainConfig(family="diffusion", task="distill", teacher=str(tiny_model_dir), size=32, data="shapes:16",
                          distill_guidance=w, self_consistency_fraction=0.0, distill_base_steps=8).validate()
        train, val = split(data, cfg)
        task = DistillTask(cfg, train, val, "cpu")
        task.teacher.eval().requires_grad_(False)
        task.bind_ema(task.model)
        rnd = task.draw(torch.Generator().manual_seed(0), 8)
        loss, logs = task.shortcut_loss(task.model, torch.arange(8), rnd)
        losses[w] = float(loss.detach())
    assert losses[1.0] == 0.0 and losses[4.0] > 0.0


def test_a_teacher_sampling_with_euler_a_is_matched_on_its_ode(tmp_path, tiny_model_dir):
    """The student learns the teacher's flow, so the validation reference is the teacher's ODE
    solve even when its default sampler is the stochastic euler_a: the same numbers as for a
    teacher whose default is DPM-Solver++(2M)."""
    import shutil

    hist = {}
    for sampler in ("dpmpp2m", "euler_a"):
        teacher = tmp_path / f"teacher-{sampler}"
        shutil.copytree(tiny_model_dir, teacher)
        cfg = json.loads((teacher / "config.json").read_text())
        cfg["defaults"]["sampler"] = sampler
        (teacher / "config.json").write_text(json.dumps(cfg))
        run_cli("distill", "--from", teacher, "--data", "shapes:16", "--out", tmp_path / sampler, "--steps", 2,
                "--base-steps", 8, "--train-steps", 2, "--batch-size", 4, "--eval-every", 2, "--ckpt-every", 2)
        hist[sampler] = [json.loads(x) for x in (tmp_path / sampler / "val_history.jsonl").read_text().splitlines()]
    assert hist["euler_a"][-1]["val_mse_2step"] == hist["dpmpp2m"][-1]["val_mse_2step"]
