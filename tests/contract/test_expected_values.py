"""Images against stored expected values (tests/contract/expected/, written only by
scripts/refresh_expected.py, which records why): seeded statistics of every family's samplers on
tiny random models, and the shipped default model's first image.

If one of these fails after a change that was MEANT to change images (a retrained default model,
a sampler fix), refresh them with the script and say why; if the change was not meant to change
images, the failure is the bug."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import expected_values as ev


@pytest.fixture(scope="module")
def pipes(tmp_path_factory) -> ev.TinyPipelines:
    return ev.TinyPipelines(tmp_path_factory.mktemp("expected"))


@pytest.fixture(scope="module")
def stored_samplers() -> dict:
    assert ev.SAMPLERS_FILE.is_file(), f"{ev.SAMPLERS_FILE} is missing; create it with {ev.REFRESH}"
    return ev.read(ev.SAMPLERS_FILE)["values"]


def test_every_sampler_has_stored_values(stored_samplers):
    missing = [f"{f}/{m}/{s}" for f, m, s in ev.cases() if f"{f}/{m}/{s}" not in stored_samplers]
    assert not missing, f"no stored values for {missing}: a new family or sampler? Run {ev.REFRESH}"


@pytest.mark.parametrize("family, mode, sampler", ev.cases(), ids=[f"{f}/{m}/{s}" for f, m, s in ev.cases()])
def test_sampler_statistics_match_the_stored_values(stored_samplers, pipes, family, mode, sampler):
    key = f"{family}/{mode}/{sampler}"
    if key not in stored_samplers:
        pytest.fail(f"no stored values for {key}; run {ev.REFRESH}")
    got = ev.sampler_stats(pipes(family, mode), sampler)
    want = stored_samplers[key]
    for stat in ("mean", "std"):
        diff = np.abs(np.array(got[stat]) - np.array(want[stat])).max()
        assert diff <= ev.STATS_TOL, (f"{key} {stat}: {got[stat]} vs stored {want[stat]} (tolerance {ev.STATS_TOL}). "
                                      f"If this change is meant to change images, run {ev.REFRESH}")


def test_default_model_first_image_matches_the_stored_one():
    """The shipped model's first image for a fixed prompt and seed, within a small tolerance.
    The stored image belongs to one set of weights (their sha256): a retrained default model is
    a different model, and this test then fails asking for the refresh script, whose --why
    records the new model's provenance."""
    stored = ev.read(ev.DEFAULT_FILE).get("values")
    assert stored and ev.DEFAULT_PNG.is_file(), f"no stored default image; run {ev.REFRESH} --only default"
    sha = ev.weights_sha256()
    assert sha == stored["weights_sha256"], (
        f"the shipped default model changed (weights sha256 {sha[:12]}, stored values are for "
        f"{stored['weights_sha256'][:12]}): run {ev.REFRESH} --only default")
    image, settings = ev.default_first_image()
    assert (stored["prompt"], stored["seed"], stored["settings"]) == (ev.DEFAULT_PROMPT, ev.DEFAULT_SEED, settings)
    got = np.asarray(image, dtype=np.int16)
    with Image.open(ev.DEFAULT_PNG) as im:
        want = np.asarray(im.convert("RGB"), dtype=np.int16)
    diff = np.abs(got - want)
    assert diff.mean() <= ev.DEFAULT_MEAN_TOL and diff.max() <= ev.DEFAULT_MAX_TOL, (
        f"default model's first image moved: mean |diff| {diff.mean():.2f}, max {diff.max()} "
        f"(tolerances {ev.DEFAULT_MEAN_TOL}, {ev.DEFAULT_MAX_TOL}). If that is intended, run {ev.REFRESH}")
