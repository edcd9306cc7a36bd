"""The AR family behind the shared Pipeline contract: folder round trip, samplers, seeds, the
transformers-loadable llama/ subfolder, and the shared training loop."""
import pytest
import torch

import blinkgen
from blinkgen.families.ar.pipeline import SAMPLERS, ARPipeline
from blinkgen.pipeline import Request
from conftest import make_tiny
from blinkgen.errors import ModelLoadError, UserInputError

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_tiny("ar", tmp_path_factory.mktemp("ar") / "tiny-ar")


def test_load_generate_every_sampler(folder):
    gen = blinkgen.load(str(folder))
    assert isinstance(gen, ARPipeline) and gen.family == "ar" and gen.image_size == 32
    for sampler in SAMPLERS:
        ims = gen.generate("a red circle", n=2, seed=5, sampler=sampler)
        assert [im.size for im in ims] == [(32, 32)] * 2 and ims[0].mode == "RGB"
    with pytest.raises(UserInputError, match="sampler"):
        gen.generate("x", sampler="euler")


def test_seed_alone_decides_the_image(folder):
    gen = ARPipeline.from_folder(folder)
    s = gen.settings(guidance=2.5)
    batch = gen.sample_tokens(["a cat", "a blue square on a red background", "x"], [7, 8, 9], s)
    alone = gen.sample_tokens(["a blue square on a red background"], [8], s)
    assert torch.equal(batch[1:2], alone)
    cached, nocache = (gen.sample_tokens(["a cat"], [1], gen.settings(sampler=k))
                                 for k in ("cached", "nocache"))
    assert torch.equal(cached, nocache)  # same uniforms, same tokens, with or without cache
    calls = []
    gen.sample([Request("a", 0)], s, callback=lambda i, n, preview: calls.append((i, n, preview)))
    assert calls[-1] == (16, 16, None) and len(calls) == 16


def test_folder_round_trip_and_transformers_loads_the_llama(folder, tmp_path):
    from transformers import LlamaForCausalLM

    gen = ARPipeline.from_folder(folder)
    hf = LlamaForCausalLM.from_pretrained(folder / "llama").eval()
    ids = torch.randint(0, gen.model.cfg.llama.vocab_size, (1, 12))
    with torch.no_grad():
        assert (hf(ids).logits - gen.model.llama(ids)).abs().max() < 1e-4
    gen.save(tmp_path / "copy")
    again = ARPipeline.from_folder(tmp_path / "copy")
    s = gen.settings()
    assert torch.equal(gen.sample_tokens(["a dog"], [3], s), again.sample_tokens(["a dog"], [3], s))
    (tmp_path / "copy" / "llama" / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ModelLoadError):
        ARPipeline.from_folder(tmp_path / "copy")


@pytest.mark.slow
def test_tokenizer_then_ar_and_maskgit_through_the_shared_loop(tmp_path):
    from blinkgen.data.registry import load_dataset
    from blinkgen.train.config import TrainConfig
    from blinkgen.train.loop import train
    data = load_dataset("shapes:40", 32, 0)
    common = dict(size=32, preset="tiny", steps=4, batch_size=8, eval_every=4, sample_every=0,
                  ckpt_every=0, log_every=0, data="shapes:40")
    tok = train(TrainConfig(family="tokenizer", out=str(tmp_path / "tok"), **common), data=data)
    model = train(TrainConfig(family="ar", out=str(tmp_path / "ar"), autoencoder=str(tok), **common), data=data)
    ims = blinkgen.load(str(model)).generate("a red circle", n=1, seed=0)
    assert ims[0].size == (32, 32)
    # the parallel (masked) mode trains on the same tokenizer through the same loop
    model = train(TrainConfig(family="maskgit", out=str(tmp_path / "mg"), autoencoder=str(tok), **common), data=data)
    g = blinkgen.load(str(model))
    assert g.samplers == ("maskgit",)
    ims = g.generate("a red circle", n=1, seed=0, steps=4)
    assert ims[0].size == (32, 32)
