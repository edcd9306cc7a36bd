"""Issue 10, fault 5 and its kind: a file blinkgen writes where the user told it to is never
replaced silently. Generated images get distinct names per (prompt, seed, settings); every
user-named output (generate -o/--outdir/--grid, eval --out, bench --out; the data builders in
tests/unit/test_data_outputs.py) refuses an existing file unless --overwrite -- before any work."""
import json

import pytest
from hypothesis import given, strategies as st

from benchload import load_bench
from blinkgen.errors import OutputExistsError
from blinkgen.outputs import check_new, image_name, slug, write_bytes
from blinkgen.pngmeta import read_parameters
from conftest import run_cli


def _gen(model, *args, check=True):
    return run_cli("generate", *args, "--model", model, "--steps", 2, check=check)


def test_issue_example_non_latin_prompts_get_distinct_files(tmp_path, tiny_model_dir):
    out = tmp_path / "o"
    first = _gen(tiny_model_dir, "红色的心", "--outdir", out).stdout.strip()
    before = open(first, "rb").read()
    second = _gen(tiny_model_dir, "🍎", "--outdir", out).stdout.strip()
    assert first != second and len(list(out.iterdir())) == 2
    assert open(first, "rb").read() == before                              # not replaced
    assert read_parameters(first)["prompt"] == "红色的心" and read_parameters(second)["prompt"] == "🍎"


def test_same_prompt_other_sampler_gets_another_name(tmp_path, tiny_model_dir):
    out = tmp_path / "o"
    a = _gen(tiny_model_dir, "red heart", "--outdir", out, "--sampler", "euler").stdout.strip()
    b = _gen(tiny_model_dir, "red heart", "--outdir", out, "--sampler", "heun").stdout.strip()
    assert a != b and {read_parameters(a)["sampler"], read_parameters(b)["sampler"]} == {"euler", "heun"}


def test_the_same_output_again_is_refused_unless_overwrite(tmp_path, tiny_model_dir):
    out = tmp_path / "o"
    path = _gen(tiny_model_dir, "red heart", "--outdir", out).stdout.strip()
    old = open(path, "rb").read()
    for args in (["--outdir", out], ["--guidance", 1, "-o", path], ["-n", 1, "-o", path]):
        r = _gen(tiny_model_dir, "red heart", *args, check=False)
        assert r.returncode == 2 and "--overwrite" in r.stderr and "Traceback" not in r.stderr
        assert open(path, "rb").read() == old
    r = _gen(tiny_model_dir, "red heart", "--guidance", 1, "-o", path, "--overwrite")
    assert read_parameters(path)["guidance"] == 1.0


def test_grid_and_numbered_outputs_are_checked_before_any_work(tmp_path, tiny_model_dir):
    grid = _gen(tiny_model_dir, "red heart", "-n", 2, "--grid", "--outdir", tmp_path).stdout.strip()
    assert grid.endswith("-grid.png") and read_parameters(grid)["seeds"] == [0, 1]
    assert _gen(tiny_model_dir, "red heart", "-n", 2, "--grid", "--outdir", tmp_path, check=False).returncode == 2
    (tmp_path / "x-1.png").write_bytes(b"mine")                            # -o x.png -n 2 writes x-0, x-1
    r = _gen(tiny_model_dir, "red heart", "-n", 2, "-o", tmp_path / "x.png", check=False)
    assert r.returncode == 2 and not (tmp_path / "x-0.png").exists()       # nothing half-written
    assert (tmp_path / "x-1.png").read_bytes() == b"mine"


# --- naming -------------------------------------------------------------------------------------

SETTINGS = st.fixed_dictionaries({"steps": st.integers(1, 50), "guidance": st.sampled_from([0.0, 1.5, 3.0]),
                                  "sampler": st.sampled_from(["euler", "heun", "dpmpp2m"]),
                                  "model": st.sampled_from(["default", "mine"])})


@given(st.lists(st.tuples(st.text(min_size=1, max_size=20), st.integers(0, 3), SETTINGS), min_size=2, max_size=8))
def test_distinct_prompt_seed_settings_get_distinct_names(runs):
    """Property: names are equal exactly when (prompt, seed, settings) are."""
    names = {}
    for prompt, seed, s in runs:
        key = (prompt, seed, tuple(sorted(s.items())))
        names.setdefault(image_name({"prompt": prompt, **s}, seed), set()).add(key)
    assert all(len(keys) == 1 for keys in names.values())


@given(st.text(max_size=80))
def test_slug_is_safe_ascii(text):
    s = slug(text)
    assert s and len(s) <= 40 and set(s) <= set("abcdefghijklmnopqrstuvwxyz0123456789-")
    assert not s.startswith("-") and not s.endswith("-")


def test_write_bytes_never_replaces_unless_told(tmp_path):
    p = tmp_path / "f.bin"
    write_bytes(p, b"one")
    with pytest.raises(OutputExistsError, match="--overwrite"):
        write_bytes(p, b"two")
    assert p.read_bytes() == b"one"
    write_bytes(p, b"two", overwrite=True)
    assert p.read_bytes() == b"two" and sorted(x.name for x in tmp_path.iterdir()) == ["f.bin"]  # no temp left
    with pytest.raises(OutputExistsError, match="--force"):
        check_new([p], flag="--force")


# --- the sweep: every other user-named output ---------------------------------------------------

def test_eval_out_refuses_before_any_work(tmp_path):
    from blinkgen.eval.evaluate import evaluate

    (tmp_path / "metrics.json").write_text("{}")
    with pytest.raises(OutputExistsError, match="metrics.json.*--overwrite"):
        evaluate("no-such-model", "shapes:4", samples=2, out_dir=tmp_path)  # refused before loading
    r = run_cli("eval", "--model", "no-such-model", "--data", "shapes:4", "--out", tmp_path, check=False)
    assert r.returncode == 2 and "--overwrite" in r.stderr


@pytest.mark.parametrize("name, args", [
    ("bench_diffusion", ["--model", "x"]), ("bench_families", []), ("bench_ar", []),
    ("bench_tokenizer", ["--tokenizer", "x"]), ("bench_sjd", ["--ar", "x"]),
])
def test_bench_out_refuses_before_the_benchmark(tmp_path, name, args, capsys):
    out = tmp_path / "r.json"
    out.write_text(json.dumps({"mine": 1}))
    with pytest.raises(SystemExit) as e:
        load_bench(name).main([*args, "--out", str(out)])
    assert e.value.code == 2 and "--overwrite" in capsys.readouterr().err
    assert json.loads(out.read_text()) == {"mine": 1}


@pytest.mark.parametrize("name", ["x.jpg", "x.webp", "x"])
def test_an_image_output_not_named_png_is_refused_before_any_work(name, tmp_path):
    """Regression: `-o x.jpg` wrote PNG bytes under a .jpg name. Every image writer (generate,
    grid, edit/vary/upscale) checks the name first; .PNG in capitals is a PNG name."""
    from blinkgen.errors import UserInputError
    from blinkgen.outputs import check_png_names

    want = "use --outdir" if name == "x" else "name the output .png"  # no suffix: most likely meant a folder
    with pytest.raises(UserInputError, match=want):
        check_png_names([tmp_path / "ok.png", tmp_path / name])
    check_png_names([tmp_path / "a.png", tmp_path / "B.PNG"])


def test_generate_refuses_a_jpg_name(tmp_path, tiny_model_dir):
    r = _gen(tiny_model_dir, "red heart", "-o", tmp_path / "x.jpg", check=False)
    assert r.returncode == 2 and "name the output .png" in r.stderr and not (tmp_path / "x.jpg").exists()


def test_check_folder_names_the_file_in_the_way(tmp_path):
    from blinkgen.errors import UserInputError
    from blinkgen.outputs import check_folder

    f = tmp_path / "w4.png"
    f.write_bytes(b"keep")
    check_folder(tmp_path / "new" / "deeper")  # not there yet: fine, it is made when written
    with pytest.raises(UserInputError, match="w4.png is a file, not a folder; the run folder must be a folder"):
        check_folder(f, "run folder")
    with pytest.raises(UserInputError, match="w4.png is a file, not a folder, so the .* cannot be made inside it"):
        check_folder(f / "sub" / "run", "run folder")
    with pytest.raises(UserInputError, match="is a folder, not a file"):
        check_new([tmp_path], overwrite=True)  # writing an image over a folder: refused even with --overwrite
    assert f.read_bytes() == b"keep"


def test_train_out_blocked_by_a_file_and_no_empty_run_folder_on_failure(tmp_path):
    f = tmp_path / "w4.png"
    f.write_bytes(b"keep")
    r = run_cli("train", "--family", "diffusion", "--data", "shapes:100", "--out", f, "--steps", 1, check=False)
    assert r.returncode == 2 and "w4.png is a file, not a folder" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert f.read_bytes() == b"keep"
    run = tmp_path / "run"
    r = run_cli("train", "--family", "diffusion", "--data", tmp_path / "no-such-folder", "--out", run, "--steps", 1,
                check=False)
    assert r.returncode == 2 and "no such folder" in r.stderr, r.stderr
    assert not run.exists()  # a run that failed on its data leaves no empty folder behind
