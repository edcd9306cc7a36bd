"""`blinkgen serve` flags: the main CLI picks up serve's `register`, flags become a ServeConfig,
bad values are refused by argparse, and a bad model is one clear error (exit 2), not a trace."""
from __future__ import annotations

import pytest

from blinkgen.serve.commands import config_from_args


def parse(argv):
    from blinkgen.cli import build_parser

    return build_parser().parse_args(argv)


def test_flags_become_config(tmp_path, monkeypatch):
    monkeypatch.delenv("BLINKGEN_API_KEYS", raising=False)
    keys = tmp_path / "keys"
    keys.write_text("k1\n\n# comment\nk2  # trailing comment\n")
    args = parse(["serve", "--model", "a", "--model", "b", "--port", "9001", "--api-key-file", str(keys),
                  "--max-batch", "4", "--batch-window-ms", "25", "--max-queue", "32", "--max-steps", "8",
                  "--keep-jobs", "10", "--keep-images", "20", "--keep-mb", "1.5"])
    assert args.func.__name__ == "run" and args.model == ["a", "b"] and args.host == "127.0.0.1"
    cfg = config_from_args(args)
    assert (cfg.max_batch, cfg.batch_window_ms, cfg.max_queue) == (4, 25.0, 32)
    assert cfg.api_keys == {"k1", "k2"} and cfg.limits.max_steps == 8
    assert (cfg.keep_jobs, cfg.keep_images, cfg.keep_mb) == (10, 20, 1.5)


@pytest.mark.parametrize("flag,value", [("--max-batch", "0"), ("--max-queue", "-1"), ("--port", "x"),
                                        ("--batch-window-ms", "-5"), ("--timeout-s", "0"),
                                        ("--keep-jobs", "0"), ("--keep-mb", "-1")])
def test_bad_flag_values_are_refused(flag, value, capsys):
    with pytest.raises(SystemExit):
        parse(["serve", flag, value])
    assert flag in capsys.readouterr().err


def test_unknown_model_is_one_clear_error(tmp_path, capsys):
    from blinkgen.cli import main

    assert main(["serve", "--model", str(tmp_path / "missing"), "--port", "1"]) == 2
    err = capsys.readouterr().err
    assert "missing" in err and "Traceback" not in err


def test_missing_key_file_is_one_clear_error(tmp_path, capsys):
    from blinkgen.serve.commands import main

    assert main(["--api-key-file", str(tmp_path / "nokeys"), "--port", "1"]) == 2
    assert "api-key-file" in capsys.readouterr().err
