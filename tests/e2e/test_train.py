"""The training loop's promises, tested through the real CLI in real processes:
SIGKILL + --resume ends bit-identical to an uninterrupted run; two processes (torchrun, gloo)
compute what one process computes for the same global batch; Ctrl-C saves and exits cleanly."""
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import CHILD_ENV, run_cli

pytestmark = pytest.mark.slow


def train_args(out, ae, steps=40, batch=8, extra=()):
    return ["train", "--family", "diffusion", "--data", "shapes:48", "--size", "32", "--preset", "tiny",
            "--autoencoder", ae, "--out", out, "--steps", steps, "--batch-size", batch, "--eval-every", 10,
            "--ckpt-every", 5, "--sample-every", 0, "--log-every", 5, "--lr", "1e-3", *extra]


def weights(folder: Path) -> dict:
    return load_file(str(folder / "model" / "model.safetensors"))


def assert_same(a: dict, b: dict, atol=0.0):
    assert a.keys() == b.keys()
    for k in a:
        if atol == 0:
            assert torch.equal(a[k], b[k]), k
        else:
            torch.testing.assert_close(a[k], b[k], atol=atol, rtol=1e-3, msg=k)


def test_sigkill_then_resume_equals_uninterrupted(tmp_path, tiny_model_dir):
    ae = tiny_model_dir / "autoencoder"
    ref = tmp_path / "ref"
    run_cli(*train_args(ref, ae, steps=120))

    cut = tmp_path / "cut"
    p = subprocess.Popen([sys.executable, "-m", "blinkgen.cli", *map(str, train_args(cut, ae, steps=120))],
                         env=CHILD_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    latest = cut / "checkpoints" / "latest"
    deadline = time.time() + 240
    while not latest.exists() and time.time() < deadline and p.poll() is None:
        time.sleep(0.005)
    p.send_signal(signal.SIGKILL)
    assert p.wait() == -signal.SIGKILL, "the run finished before it could be killed"
    killed_at = int(latest.read_text().strip().split("-")[1])
    assert killed_at < 120
    assert not (cut / "model").exists()

    r = run_cli(*train_args(cut, ae, steps=120), "--resume")
    assert_same(weights(ref), weights(cut))
    ck_ref = load_file(str(ref / "checkpoints" / "step-00000120" / "optimizer.model.safetensors"))
    ck_cut = load_file(str(cut / "checkpoints" / "step-00000120" / "optimizer.model.safetensors"))
    assert_same(ck_ref, ck_cut)


def test_existing_run_needs_resume_flag(tmp_path, tiny_model_dir):
    out = tmp_path / "run"
    run_cli(*train_args(out, tiny_model_dir / "autoencoder", steps=5))
    r = run_cli(*train_args(out, tiny_model_dir / "autoencoder", steps=5), check=False)
    assert r.returncode == 2 and "--resume" in r.stderr


def test_two_processes_match_one(tmp_path, tiny_model_dir):
    ae = tiny_model_dir / "autoencoder"
    one, two = tmp_path / "one", tmp_path / "two"
    # fp32: the all-reduce's summation order differs from one process's by ~1e-7, which bf16
    # autocast (the default on bf16 CPUs) would round up to ~1e-3 in the weights
    fp32 = ("--mixed-precision", "no")
    run_cli(*train_args(one, ae, steps=8, extra=fp32))
    import socket
    with socket.socket() as sock:  # a free port: "0" is not resolved by torchrun's static rendezvous
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
           "--master_addr", "127.0.0.1",
           "-m", "blinkgen.cli", *map(str, train_args(two, ae, steps=8, extra=fp32))]
    r = subprocess.run(cmd, env=CHILD_ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((two / "train_stats.json").read_text())["processes"] == 2
    # same global batch and randomness: equal up to float reduction order in the all-reduce
    assert_same(weights(one), weights(two), atol=1e-5)


def test_ctrl_c_saves_a_checkpoint_and_exits_cleanly(tmp_path, tiny_model_dir):
    out = tmp_path / "run"
    p = subprocess.Popen([sys.executable, "-m", "blinkgen.cli",
                          *map(str, train_args(out, tiny_model_dir / "autoencoder", steps=100000))],
                         env=CHILD_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while not (out / "checkpoints" / "latest").exists() and time.time() < deadline:
        time.sleep(0.02)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130, err[-2000:]
    assert "resume" in err
    step = int((out / "checkpoints" / "latest").read_text().split("-")[1])
    assert 5 <= step < 100000
    assert (out / "model" / "model.safetensors").is_file()  # the partial model is exported too


def test_cli_train_then_generate_end_to_end(tmp_path):
    out = tmp_path / "run"
    run_cli("train", "--family", "diffusion", "--data", "shapes:40", "--size", "32", "--preset", "tiny",
            "--ae-preset", "tiny", "--ae-steps", 6, "--out", out, "--steps", 6, "--batch-size", 8,
            "--eval-every", 3, "--sample-every", 6, "--ckpt-every", 3)
    assert (out / "ae" / "model" / "config.json").is_file()
    assert (out / "samples" / "step-00000006.png").is_file()
    assert list((out / "tb").iterdir())  # TensorBoard event file
    png = tmp_path / "x.png"
    r = run_cli("generate", "two red circles", "--model", out / "model", "-o", png, "--steps", 3, "--seed", 7)
    from blinkgen.pngmeta import read_parameters
    params = read_parameters(png)
    assert params["prompt"] == "two red circles" and params["seed"] == 7 and params["steps"] == 3
