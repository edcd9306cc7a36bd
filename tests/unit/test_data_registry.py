"""Dataset specs and the `blinkgen data` commands, on tiny real folders in tmp_path."""
import argparse
import json

import pytest
import torch
from PIL import Image

from blinkgen.data.commands import register
from blinkgen.data.registry import load_dataset
from blinkgen.errors import DataError, UserInputError

torch.set_num_threads(1)


def _folder(path, n=2, color=(0, 128, 0)):
    path.mkdir(parents=True)
    for i in range(n):
        Image.new("RGB", (12, 12), color).save(path / f"{i}.png")
        (path / f"{i}.txt").write_text(f"green square {i}")
    return path


def _cli(argv):
    parser = argparse.ArgumentParser(prog="blinkgen")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    args.func(args)


def test_folder_spec_and_mix_with_plus_in_a_folder_name(tmp_path):
    a = _folder(tmp_path / "a")
    plus = _folder(tmp_path / "b+c", n=1, color=(0, 0, 0))
    assert len(load_dataset(str(a), size=8)) == 2
    assert len(load_dataset(str(plus), size=8)) == 1          # '+' in a real folder name
    mix = load_dataset(f"{a}+{plus}", size=8)
    assert len(mix) == 3 and mix.images.shape == (3, 3, 8, 8) and mix.report.loaded == 3


def test_shapes_specs_and_seed_offset_in_mixes():
    one = load_dataset("shapes:3", size=32, seed=5)
    assert len(one) == 3 and one.size == 32
    two = load_dataset("shapes:3+shapes:3", size=32, seed=5)
    assert torch.equal(two.images[:3], one.images)            # first part keeps the seed
    assert not torch.equal(two.images[3:], one.images)        # second part gets seed + 1


@pytest.mark.parametrize("spec", ["", "nope/none", "shapes:0", "shapes:x", "shapes:", "shapes:-1", "a++b"])
def test_unknown_specs_list_the_forms(spec):
    with pytest.raises(UserInputError, match=r"shapes|folder|empty|positive|at least"):
        load_dataset(spec)


def test_cli_shapes_writes_a_folder_that_inspect_reads(tmp_path, capsys):
    out = tmp_path / "sh"
    _cli(["data", "shapes", "--out", str(out), "-n", "4", "--seed", "1", "--size", "32"])
    rows = [json.loads(ln) for ln in (out / "metadata.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and all(r["text"] == r["captions"][0] for r in rows)
    _cli(["data", "inspect", str(out), "--size", "32"])
    text = capsys.readouterr().out
    assert "loaded 4 images, skipped 0" in text and "unique" in text
    with pytest.raises(UserInputError, match="--overwrite"):
        _cli(["data", "shapes", "--out", str(out), "-n", "2"])
    with pytest.raises(SystemExit):                           # argparse rejects -n 0
        _cli(["data", "shapes", "--out", str(out), "-n", "0"])


def test_cli_inspect_empty_folder_is_a_data_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="found 0 image files"):
        _cli(["data", "inspect", str(tmp_path / "empty")])
