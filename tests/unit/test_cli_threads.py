"""One rule for every --threads (checks.threads_arg): the top level's and train's, finetune's and
distill's each take a whole number >= 0, where 0 is the command's default, exactly as leaving the
flag out (the top level: the idle cores; training: torch's default), and each refuses a negative
or non-numeric value with the same usage error."""
from __future__ import annotations

import pytest

from blinkgen import cli

COMMANDS = {  # argv with --threads N spliced in at the marker
    "top": ["--threads", "N", "generate", "a"],
    "train": ["train", "--out", "o", "--threads", "N"],
    "finetune": ["finetune", "--from", "default", "--data", "d", "--out", "o", "--threads", "N"],
    "distill": ["distill", "--from", "default", "--out", "o", "--threads", "N"],
}


def argv(cmd: str, n: str) -> list[str]:
    return [n if a == "N" else a for a in COMMANDS[cmd]]


def threads_of(args) -> int | None:
    return args.global_threads if args.command == "generate" else args.threads


@pytest.mark.parametrize("cmd", COMMANDS)
def test_every_threads_takes_zero_and_positive_counts(cmd):
    parser = cli.build_parser()
    assert threads_of(parser.parse_args(argv(cmd, "0"))) == 0
    assert threads_of(parser.parse_args(argv(cmd, "3"))) == 3


@pytest.mark.parametrize("cmd", COMMANDS)
@pytest.mark.parametrize("value, want", [("-1", "argument --threads: must be >= 0 (0 = the default), got -1"),
                                         ("two", "argument --threads: expected a whole number of threads")])
def test_every_threads_refuses_the_same_way(cmd, value, want, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(argv(cmd, value))
    err = capsys.readouterr().err
    assert e.value.code == 2 and want in err and "Traceback" not in err, err


def test_zero_at_the_top_level_is_the_default(monkeypatch):
    """--threads 0 generate: the idle cores (apply_threads(None)), as without --threads; not refused."""
    from blinkgen.speed import threads

    seen = []
    monkeypatch.setattr(threads, "apply_threads", lambda n: seen.append(n) or 1)
    monkeypatch.setattr(cli, "cmd_generate", lambda args: None)
    assert cli.main(argv("top", "0")) == 0
    assert cli.main(["generate", "a"]) == 0
    assert cli.main(argv("top", "2")) == 0
    assert seen == [None, None, 2]


def test_zero_in_training_is_torchs_default():
    from blinkgen.train.config import TrainConfig

    assert TrainConfig().threads == 0  # the training loop leaves torch alone at 0 (train/loop.py)
    args = cli.build_parser().parse_args(argv("finetune", "0"))
    assert args.threads == 0
