"""speed/threads.py: sampling commands take no more threads than there are idle cores, an explicit
choice wins, and the thread count never changes an image."""
import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st

import blinkgen
from blinkgen.speed.threads import apply_threads, choose_threads
from conftest import run_cli


@given(st.floats(0, 64), st.integers(1, 64))
def test_auto_is_the_idle_cores_between_one_and_the_most(idle, most):
    n = choose_threads(None, most, idle=idle)
    assert 1 <= n <= most
    assert n == max(1, min(most, round(idle))) or abs(idle % 1 - 0.5) < 1e-9  # rounding of exact halves aside


def test_the_numbers_of_the_measured_case():
    assert choose_threads(None, 2, idle=1.05) == 1  # one core held by a training job: 0.32 s, not 7.5 s
    assert choose_threads(None, 2, idle=1.9) == 2   # an idle 2-core machine keeps torch's default
    assert choose_threads(None, 2, idle=0.1) == 1
    assert choose_threads(3, 2, idle=0.0) == 3      # asked for: given, whatever the load
    with pytest.raises(ValueError, match="at least 1"):
        choose_threads(0, 2, idle=2.0)


def test_omp_num_threads_is_left_alone_unless_asked(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    try:
        assert apply_threads(None) == before and torch.get_num_threads() == before
        assert apply_threads(2) == 2 and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_images_do_not_depend_on_the_thread_count(tiny_model_dir):
    gen = blinkgen.load(str(tiny_model_dir))
    before = torch.get_num_threads()
    try:
        out = {}
        for n in (1, 2):
            torch.set_num_threads(n)
            out[n] = [np.asarray(im) for im in gen.generate("two red circles", n=3, seed=5, steps=3)]
    finally:
        torch.set_num_threads(before)
    assert all(np.array_equal(a, b) for a, b in zip(out[1], out[2]))


@pytest.mark.parametrize("args, msg", [(["--threads", "-1", "generate", "a"], "argument --threads: must be >= 0"),
                                       (["--threads", "1", "models"], "train, finetune and distill take their own")])
def test_cli_refusals_are_one_line(args, msg):
    r = run_cli(*args, check=False)
    assert r.returncode == 2 and msg in r.stderr and "Traceback" not in r.stderr


def test_training_commands_keep_their_own_threads_option():
    from blinkgen.cli import build_parser

    args = build_parser().parse_args(["train", "--threads", "1", "--out", "x"])
    assert args.threads == 1 and args.global_threads is None  # not mistaken for the top-level option
    args = build_parser().parse_args(["--threads", "2", "generate", "a"])
    assert args.global_threads == 2


def test_training_is_warned_not_changed_when_cores_are_busy():
    from blinkgen.speed.threads import busy_cores_warning

    msg = busy_cores_warning(2, idle=1.0)
    assert msg and "--threads 1" in msg
    assert busy_cores_warning(2, idle=1.9) is None and busy_cores_warning(1, idle=0.0) is None
