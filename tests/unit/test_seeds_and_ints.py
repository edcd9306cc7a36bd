"""Issue 10, faults 3 and 4 and their kind (the server's side is in test_serve_inputs.py):
one seed range [0, 2^63 - 1] and one rule (seed, seed+1, ..., never wrapped) in the CLI, the
Python API, eval, datasets and training; and every integer argument of the public API takes
anything integral (`operator.index`: numpy ints, 0-d tensors) and refuses bool."""
import operator

import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st

import blinkgen
from blinkgen.checks import as_float, as_int
from blinkgen.data.image_io import read_image
from blinkgen.errors import UserInputError
from blinkgen.pipeline import Request
from blinkgen.pngmeta import read_parameters
from blinkgen.seeds import SEED_MAX, check_seed, random_seed, seed_run, torch_seed
from conftest import run_cli

INT_TYPES = [int, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64,
             lambda v: torch.tensor(v), lambda v: np.array(v)]


class Indexable:  # any object with __index__ is integral (PEP 357)
    def __init__(self, v):
        self.v = v

    def __index__(self):
        return self.v


@pytest.fixture(scope="module")
def gen(tiny_model_dir):
    return blinkgen.load(str(tiny_model_dir))


# --- checks.as_int / as_float -------------------------------------------------------------------

@given(st.integers(0, 127), st.sampled_from(INT_TYPES + [Indexable]))
def test_as_int_accepts_anything_integral(v, make):
    got = as_int(make(v), "x", 0, 127)
    assert got == v and type(got) is int


@pytest.mark.parametrize("bad", [True, False, np.bool_(True), 5.0, np.float64(5), "5", None, [5], torch.tensor(5.0)])
def test_as_int_refuses_bool_floats_and_text(bad):
    with pytest.raises(UserInputError, match="x must be an integer"):
        as_int(bad, "x")


@given(st.integers(), st.integers(-5, 5), st.integers(-5, 5))
def test_as_int_range_is_inclusive_and_named(v, lo, hi):
    if lo <= v <= hi:
        assert as_int(v, "steps", lo, hi) == v
    else:
        with pytest.raises(UserInputError, match=f"steps must be between {lo} and {hi}"):
            as_int(v, "steps", lo, hi)


@pytest.mark.parametrize("v", [2, 2.5, np.float32(2.5), np.float64(2.5), np.int64(2), torch.tensor(2.5)])
def test_as_float_accepts_real_numbers(v):
    assert as_float(v, "g") == float(v)


@pytest.mark.parametrize("bad", [True, float("nan"), float("inf"), "2", None, np.float32("nan")])
def test_as_float_refuses(bad):
    with pytest.raises(UserInputError, match="g must be a number"):
        as_float(bad, "g")


# --- the seed rule --------------------------------------------------------------------------------

@given(st.one_of(st.integers(0, 1000), st.integers(SEED_MAX - 1000, SEED_MAX)), st.integers(1, 300))
def test_seed_run_is_consecutive_and_never_wraps(seed, n):
    if seed + n - 1 <= SEED_MAX:
        assert seed_run(seed, n) == list(range(seed, seed + n))
    else:
        with pytest.raises(UserInputError, match="past the largest seed"):
            seed_run(seed, n)


@pytest.mark.parametrize("bad", [-1, SEED_MAX + 1, 2**64, True, 1.0, "3"])
def test_seeds_outside_the_range_are_refused(bad):
    with pytest.raises(UserInputError, match="seed must be"):
        check_seed(bad)


def test_random_seeds_are_in_range_and_derived_seeds_fit_torch():
    assert all(0 <= random_seed() < 2**32 for _ in range(100))
    for s in (0, 12345, SEED_MAX):  # training derives seeds by arithmetic: never out of torch's range
        torch.Generator().manual_seed(torch_seed(s * 7_919 + 10**6 * 104_729 + 1))
    assert torch_seed(12345) == 12345  # small seeds keep their streams


def test_api_largest_seeds(gen):
    a = gen.generate("red heart", n=2, seed=SEED_MAX - 1, steps=2)
    b = gen.generate("red heart", n=1, seed=SEED_MAX, steps=2)
    assert np.array_equal(np.asarray(a[1]), np.asarray(b[0]))  # image 2 of the run is seed + 1
    with pytest.raises(UserInputError, match="past the largest seed"):
        gen.generate("red heart", n=2, seed=SEED_MAX, steps=2)


def test_cli_seed_of_a_png_reproduces_the_image_through_the_api(tmp_path, tiny_model_dir, gen):
    """A seed read back from a PNG blinkgen wrote -- even the largest -- reproduces it."""
    out = tmp_path / "o"
    run_cli("generate", "red heart", "--model", tiny_model_dir, "-n", 2, "--seed", SEED_MAX - 1,
            "--steps", 2, "--outdir", out)
    pngs = sorted(out.glob("*.png"), key=lambda p: read_parameters(p)["seed"])
    assert [read_parameters(p)["seed"] for p in pngs] == [SEED_MAX - 1, SEED_MAX]
    for p in pngs:
        prm = read_parameters(p)
        again = gen.generate(prm["prompt"], seed=prm["seed"], steps=prm["steps"], guidance=prm["guidance"],
                             sampler=prm["sampler"])[0]
        assert np.array_equal(np.asarray(again), np.asarray(read_image(p)))
    r = run_cli("generate", "red heart", "--model", tiny_model_dir, "-n", 2, "--seed", SEED_MAX,
                "--outdir", out, check=False)
    assert r.returncode == 2 and "past the largest seed" in r.stderr and "Traceback" not in r.stderr


# --- integer-like arguments across the public API -------------------------------------------------

def test_generate_takes_numpy_ints_the_issue_example(gen):
    ref = gen.generate("red heart", seed=5, steps=2)[0]
    got = gen.generate("red heart", seed=np.int64(5), steps=np.int32(2))[0]
    assert np.array_equal(np.asarray(ref), np.asarray(got))
    two = gen.generate("red heart", n=np.int64(2), seed=torch.tensor(5), steps=2, guidance=np.float32(3.0))
    assert len(two) == 2


@pytest.mark.parametrize("kwargs, arg", [(dict(seed=True), "seed"), (dict(n=True), "n"), (dict(steps=True), "steps"),
                                         (dict(guidance=True), "guidance"), (dict(seed=5.0), "seed")])
def test_generate_refuses_bool_and_floats_for_ints(gen, kwargs, arg):
    with pytest.raises(UserInputError, match=f"{arg} must be"):
        gen.generate("red heart", **kwargs)


def test_sample_settings_and_seeds_take_numpy_ints(gen):
    s = gen.settings(steps=np.int64(2), guidance=np.float64(1.5))
    assert s.steps == 2 and type(s.steps) is int and type(s.guidance) is float
    ims = gen.sample([Request("a", np.int64(1)), Request("b", np.uint32(2))], s).images
    assert np.array_equal(np.asarray(ims[1]), np.asarray(gen.sample([Request("b", 2)], s).images[0]))
    with pytest.raises(UserInputError, match="seed must be"):
        gen.sample([Request("a", True)], s)
    with pytest.raises(UserInputError, match="strength must be"):
        gen.sample([Request("a", 1, init_image=object(), strength=np.float32(2.0))], s)


def test_datasets_caption_and_eval_take_numpy_ints(tmp_path):
    from blinkgen.data.folder import load_folder
    from blinkgen.data.registry import load_dataset
    from blinkgen.data.shapes import make_shapes
    from blinkgen.eval.caption import caption
    from blinkgen.eval.evaluate import evaluate

    a = make_shapes(n=np.int64(3), seed=np.int32(4), size=np.int64(32))
    b = make_shapes(n=3, seed=4, size=32)
    assert torch.equal(a.images, b.images)
    assert torch.equal(load_dataset("shapes:3", size=np.int64(32), seed=np.uint8(4)).images, b.images)
    with pytest.raises(UserInputError, match="n must be"):
        make_shapes(n=True)
    from PIL import Image

    Image.new("RGB", (16, 16), "red").save(tmp_path / "a.png")
    (tmp_path / "a.txt").write_text("red")
    assert load_folder(tmp_path, size=np.int16(8)).size == 8
    with pytest.raises(UserInputError, match="size must be"):
        load_folder(tmp_path, size=True)
    assert len(caption(tmp_path / "a.png", candidates=["red", "blue"], top_k=np.int64(1))) == 1
    with pytest.raises(UserInputError, match="top_k must be"):
        caption(tmp_path / "a.png", candidates=["red"], top_k=True)
    with pytest.raises(UserInputError, match="samples must be"):          # checked before any work
        evaluate("default", "shapes:4", samples=True)
    with pytest.raises(UserInputError, match="samples must be >= 2"):    # numpy int passes the type check
        evaluate("default", "shapes:4", samples=np.int64(1))
    with pytest.raises(UserInputError, match="past the largest seed"):
        evaluate("default", "shapes:4", samples=4, seed=SEED_MAX)


def test_train_config_types(tmp_path):
    from blinkgen.train.config import TrainConfig

    cfg = TrainConfig(steps=np.int64(3), batch_size=np.int32(4), lr=np.float32(0.001), seed=np.uint64(SEED_MAX))
    cfg.validate()
    assert (type(cfg.steps), type(cfg.batch_size), type(cfg.lr), cfg.seed) == (int, int, float, SEED_MAX)
    for bad, arg in ((dict(steps=True), "steps"), (dict(steps="100"), "steps"), (dict(lr="0.1"), "lr"),
                     (dict(seed=-1), "seed"), (dict(seed=SEED_MAX + 1), "seed"), (dict(data=5), "data")):
        with pytest.raises(UserInputError, match=f"{arg} must be"):
            TrainConfig(**bad).validate()
    assert operator.index(TrainConfig(ae_steps=np.int64(7)).validate().ae_steps) == 7
