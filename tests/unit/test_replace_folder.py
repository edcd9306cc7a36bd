"""outputs.replacing_folder, the one atomic folder swap behind model, checkpoint, evaluator,
LoRA adapter and emoji dataset saves: a write that succeeds replaces the folder and leaves no temp or old folder
beside it; a write that fails leaves the old folder exactly as it was and no temp folder behind."""
from __future__ import annotations

import pytest

from blinkgen.modelio import write_folder_atomic
from blinkgen.outputs import replacing_folder


def _siblings(dest):
    return sorted(p.name for p in dest.parent.iterdir() if p.name != dest.name)


def _old_folder(tmp_path):
    dest = tmp_path / "model"
    dest.mkdir()
    (dest / "config.json").write_text("old")
    (dest / "sub").mkdir()
    (dest / "sub" / "w.bin").write_bytes(b"old weights")
    return dest


def test_success_replaces_the_folder_and_leaves_nothing_beside_it(tmp_path):
    dest = _old_folder(tmp_path)
    with replacing_folder(dest) as tmp:
        assert tmp.is_dir() and not any(tmp.iterdir()) and tmp.parent == dest.parent
        assert (dest / "config.json").read_text() == "old"  # not swapped until the block ends
        (tmp / "config.json").write_text("new")
    assert sorted(p.name for p in dest.iterdir()) == ["config.json"]
    assert (dest / "config.json").read_text() == "new"
    assert _siblings(dest) == []


def test_a_new_folder_and_its_parents_are_created(tmp_path):
    dest = tmp_path / "a" / "b" / "model"
    with replacing_folder(dest) as tmp:
        (tmp / "config.json").write_text("new")
    assert (dest / "config.json").read_text() == "new"
    assert _siblings(dest) == []


@pytest.mark.parametrize("exc", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_a_failed_write_keeps_the_old_folder_and_removes_the_temp_one(tmp_path, exc):
    dest = _old_folder(tmp_path)
    with pytest.raises(type(exc)):
        with replacing_folder(dest) as tmp:
            (tmp / "config.json").write_text("half")
            raise exc
    assert (dest / "config.json").read_text() == "old"
    assert (dest / "sub" / "w.bin").read_bytes() == b"old weights"
    assert _siblings(dest) == []


def test_write_folder_atomic_refuses_an_unknown_kind_without_touching_the_old_folder(tmp_path):
    dest = _old_folder(tmp_path)
    with pytest.raises(ValueError, match="unknown file kind"):
        write_folder_atomic(dest, {"config.json": {"a": 1}, "notes.txt": {}})
    assert (dest / "config.json").read_text() == "old"
    assert _siblings(dest) == []


def test_a_failed_swap_puts_the_old_folder_back(tmp_path, monkeypatch):
    """The second rename (temp -> dest) failing, e.g. on a full or read-only disk, must not leave
    dest missing with the old folder parked under a hidden .old name."""
    import os

    from blinkgen import outputs

    dest = _old_folder(tmp_path)
    real = os.replace

    def replace(src, dst):
        if str(src).endswith(".tmp"):
            raise OSError("no space left on device")
        return real(src, dst)

    monkeypatch.setattr(outputs.os, "replace", replace)
    with pytest.raises(OSError, match="no space"):
        with replacing_folder(dest) as tmp:
            (tmp / "config.json").write_text("new")
    assert (dest / "config.json").read_text() == "old"
    assert (dest / "sub" / "w.bin").read_bytes() == b"old weights"
    assert _siblings(dest) == []
