"""The pipeline contract (blinkgen/pipeline.py), checked for every registered family, mode and
sampler -- the built-in ones and the test-only "constant" family alike, so a new family inherits
these tests by registering. Each case runs a tiny random model of that family (its `tiny()`):

same seed -> same bytes; an image never depends on its batch-mates; save/load is bit-identical;
progress callbacks run to the end and an exception raised in one cancels the call; network calls
are reported per image (and counted independently where the family's count is documented); bad
input is a one-line UserInputError; the registry's sampler list is the pipeline's."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import blinkgen
from blinkgen import families
from blinkgen.errors import UserInputError
from blinkgen.pipeline import Request, SampleResult, Settings, requests
from expected_values import PROMPTS, TINY_STEPS, TinyPipelines, cases, requests_for

CASES = cases()
IDS = [f"{f}/{m}/{s}" for f, m, s in CASES]


@pytest.fixture(scope="module")
def pipes(tmp_path_factory) -> TinyPipelines:
    return TinyPipelines(tmp_path_factory.mktemp("contract"))


def settings_for(pipe, sampler: str) -> Settings:
    return pipe.settings(steps=min(TINY_STEPS, pipe.max_steps), sampler=sampler)


def pixels(images) -> list[np.ndarray]:
    return [np.asarray(im) for im in images]


def same(a, b) -> bool:
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(pixels(a), pixels(b)))


def test_every_family_and_mode_is_covered():
    assert {"diffusion", "ar", "constant"} <= {f for f, _, _ in CASES}
    assert ("ar", "maskgit", "maskgit") in CASES


@pytest.mark.parametrize("family, mode, sampler", CASES, ids=IDS)
def test_registry_settings_and_result_types(pipes, family, mode, sampler):
    pipe = pipes(family, mode)
    fam = families.get(family)
    assert pipe.family == family and tuple(pipe.samplers) == tuple(fam.samplers[mode])
    s = settings_for(pipe, sampler)
    assert isinstance(s, pipe.settings_type) and isinstance(s, Settings)
    assert s.to_dict() == {"steps": s.steps, "guidance": s.guidance, "sampler": sampler}  # unset extras stay out
    res = pipe.sample(requests_for(pipe, PROMPTS, [3, 4]), s)
    assert isinstance(res, SampleResult) and len(res.images) == 2
    assert all(im.mode == "RGB" and im.size == (pipe.image_size,) * 2 for im in res.images)
    stages = {"text", "sample", "decode"} | ({"encode"} if "init_image" in pipe.requires else set())
    assert stages <= set(res.timings) <= stages | {"encode"} and all(v >= 0 for v in res.timings.values())
    assert pipe.sample([], s).images == []


@pytest.mark.parametrize("family, mode, sampler", CASES, ids=IDS)
def test_same_seed_same_bytes_and_batch_invariance(pipes, family, mode, sampler):
    pipe = pipes(family, mode)
    s = settings_for(pipe, sampler)
    batch = pipe.sample(requests_for(pipe, ["a green star", PROMPTS[0], PROMPTS[1]], [9, 5, 6]), s)
    again = pipe.sample(requests_for(pipe, ["a green star", PROMPTS[0], PROMPTS[1]], [9, 5, 6]), s)
    assert same(batch.images, again.images)
    alone = pipe.sample(requests_for(pipe, [PROMPTS[0]], [5]), s)
    assert same(alone.images, batch.images[1:2])  # same image whatever its batch-mates
    assert batch.network_calls[1] == alone.network_calls[0]
    other = pipe.sample(requests_for(pipe, [PROMPTS[0]], [6]), s)
    assert not same(other.images, alone.images)  # the seed decides


@pytest.mark.parametrize("family, mode, sampler", CASES, ids=IDS)
def test_save_load_is_bit_identical(pipes, family, mode, sampler, tmp_path):
    pipe = pipes(family, mode)
    again = blinkgen.load(str(pipe.save(tmp_path / "copy")))
    s = settings_for(pipe, sampler)
    assert type(again) is type(pipe) and again.defaults == pipe.defaults
    reqs = requests_for(pipe, PROMPTS, [1, 2])
    assert same(pipe.sample(reqs, s).images, again.sample(reqs, settings_for(again, sampler)).images)


class Cancel(Exception):
    pass


@pytest.mark.parametrize("family, mode, sampler", CASES, ids=IDS)
def test_callback_reports_progress_and_an_exception_cancels(pipes, family, mode, sampler):
    pipe = pipes(family, mode)
    s = settings_for(pipe, sampler)
    reqs = requests_for(pipe, PROMPTS, [1, 2])
    seen = []
    full = pipe.sample(reqs, s, callback=lambda step, total, preview: seen.append((step, total, preview)))
    steps = [st for st, _, _ in seen]
    assert seen and steps == sorted(steps) and seen[-1][0] == seen[-1][1]  # ends at total
    for _, _, preview in seen:
        assert preview is None or (preview.shape[0] == 2 and float(preview.min()) >= 0 and float(preview.max()) <= 1)

    def cancel(step, total, preview):
        raise Cancel()

    with pytest.raises(Cancel):
        pipe.sample(reqs, s, callback=cancel)
    assert same(pipe.sample(reqs, s).images, full.images)  # a cancelled call leaves nothing behind


def independent_count(pipe, sampler: str, s, reqs) -> tuple[list[int], int | None]:
    """(reported network calls, calls counted by a hook on the network), where the family's
    network is known to this test; None otherwise."""
    count = [0]

    def hook(*_):
        count[0] += 1

    if pipe.family == "diffusion":
        handle = pipe.dit.register_forward_hook(hook)  # one DiT forward = one pass (CFG is batched)
    elif pipe.family == "ar" and sampler != "nocache":
        from blinkgen.speed.fused_llama import fused_view

        handle = fused_view(pipe.model.llama).layers[0].qkv.register_forward_hook(hook)  # once per pass
    else:
        return pipe.sample(reqs, s).network_calls, None
    try:
        calls = pipe.sample(reqs, s).network_calls
    finally:
        handle.remove()
    return calls, count[0]


@pytest.mark.parametrize("family, mode, sampler", CASES, ids=IDS)
def test_network_calls(pipes, family, mode, sampler):
    pipe = pipes(family, mode)
    s = settings_for(pipe, sampler)
    reqs = requests_for(pipe, PROMPTS, [1, 2])
    calls, counted = independent_count(pipe, sampler, s, reqs)
    assert len(calls) == 2 and all(isinstance(c, int) and c >= 1 for c in calls)
    if family == "diffusion":
        from blinkgen.sampling.flow import nfe

        assert calls == [nfe(sampler, s.steps)] * 2 and counted == calls[0]
    elif sampler in ("cached", "nocache"):
        assert calls == [pipe.model.cfg.n_tokens] * 2 and counted in (None, calls[0])
    elif sampler == "sjd":  # one sample at a time: the passes of both images, plus their prefills
        assert all(c <= pipe.model.cfg.n_tokens for c in calls) and counted == sum(calls)
    elif sampler == "maskgit":
        assert calls == [s.steps] * 2 and counted == s.steps + 1  # + the prefix pass, cached once
    elif family in ("constant", "upscaler"):
        assert calls == [1, 1]


@pytest.mark.parametrize("family, mode, sampler", CASES, ids=IDS)
def test_bad_input_is_one_line_user_error(pipes, family, mode, sampler):
    from PIL import Image

    pipe = pipes(family, mode)
    s = settings_for(pipe, sampler)
    bad_calls = {
        "sampler": lambda: pipe.settings(sampler="no-such-sampler"),
        "steps": lambda: pipe.settings(steps=0),
        "guidance": lambda: pipe.settings(guidance=-1.0),
        "lora": lambda: pipe.settings(lora="adapter/"),  # room for it, not built yet
        "setting": lambda: pipe.settings(no_such_setting=1),
        "prompt": lambda: pipe.sample([Request("  ", 0)], s),
        "seed": lambda: pipe.sample([Request("a", -1)], s),
        # a family that takes init images refuses a non-square one; another refuses any
        "init_image": lambda: pipe.sample([Request("a", 0, init_image=Image.new("RGB", (32, 24)))], s),
        "strength": lambda: pipe.sample([Request("a", 0, strength=0.5)], s),
        "Request": lambda: pipe.sample(["a red circle"], s),
        "n must": lambda: pipe.generate("a", n=0),
    }
    for word, call in bad_calls.items():
        with pytest.raises(UserInputError) as e:
            call()
        msg = str(e.value)
        assert "\n" not in msg and word.split()[0] in msg, (word, msg)


def test_settings_of_another_family_are_refused(pipes):
    a, b = pipes("diffusion", "diffusion"), pipes("constant", "constant")
    with pytest.raises(UserInputError, match="settings must be"):
        a.sample([Request("a", 0)], b.settings())


def test_prompt_and_seed_lists_must_match():
    with pytest.raises(UserInputError, match="one seed per prompt"):
        requests(["a", "b"], [1])
    assert torch.equal(torch.tensor([r.seed for r in requests(["a", "b"], [1, 2])]), torch.tensor([1, 2]))
