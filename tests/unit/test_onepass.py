"""The one-pass families' pieces (gan, vae): the fixed-chunk evaluation that makes images batch
invariant, the KL and gradient-penalty maths, the networks' shapes, the family settings
(truncation, temperature, no guidance, one step), style phrases, and loud folder errors."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import blinkgen
from blinkgen.errors import ModelLoadError, UserInputError
from blinkgen.families.onepass import in_fixed_chunks, seeded_normal
from blinkgen.models.cvae import CVAEConfig, TextConditionalVAE, gaussian_kl
from blinkgen.models.gan import Discriminator, DiscriminatorConfig, Generator, GeneratorConfig
from blinkgen.text.encoder import TextBatch
from conftest import make_tiny


@settings(max_examples=40, deadline=None)
@given(B=st.integers(1, 9), k=st.integers(1, 4))
def test_fixed_chunks_see_k_rows_and_map_row_by_row(B, k):
    x = torch.randn(B, 3)
    tb = TextBatch(torch.randn(B, 2, 4), torch.ones(B, 2, dtype=torch.bool), torch.randn(B, 4))
    seen = []

    def fn(a, t):
        seen.append((len(a), len(t.pooled)))
        return a * 2 + t.pooled[:, :3]

    out = in_fixed_chunks(fn, x, tb, k=k)
    assert torch.equal(out, x * 2 + tb.pooled[:, :3])
    assert all(s == (k, k) for s in seen) and len(seen) == -(-B // k)


def test_seeded_normal_rows_depend_on_their_seed_only():
    a = seeded_normal((5,), [1, 2, 3])
    assert torch.equal(a[1], seeded_normal((5,), [2])[0]) and not torch.equal(a[0], a[1])


def test_gaussian_kl_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mq, lq, mp, lp = (torch.randn(6, 3, generator=g) for _ in range(4))
    want = torch.distributions.kl_divergence(torch.distributions.Normal(mq, (0.5 * lq).exp()),
                                             torch.distributions.Normal(mp, (0.5 * lp).exp()))
    torch.testing.assert_close(gaussian_kl(mq, lq, mp, lp), want)


def test_gradient_penalty_of_a_linear_critic_is_its_squared_norm():
    from blinkgen.families.gan.tasks import gradient_penalty

    w = torch.randn(1, 3, 4, 4)

    class Linear(torch.nn.Module):
        def forward(self, x, pooled):
            return (x * w).flatten(1).sum(1) + pooled.sum(1)

    gp = gradient_penalty(Linear(), torch.randn(5, 3, 4, 4), torch.randn(5, 2))
    torch.testing.assert_close(gp, w.square().sum())


def text(B: int, L: int = 7) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    mask = torch.zeros(B, L, dtype=torch.bool)
    mask[:, :3] = True
    return torch.randn(B, L, 384), mask, torch.randn(B, 384)


@pytest.mark.parametrize("channels, side", [(3, 32), (4, 16)])
def test_generator_and_discriminator_shapes(channels, side):
    widths = {4: 16, 8: 16, 16: 8, 32: 8}
    G = Generator(GeneratorConfig(out_channels=channels, out_size=side, z_dim=8, w_dim=16, widths=widths,
                                  attn=(8,), heads=2))
    D = Discriminator(DiscriminatorConfig(in_channels=channels, in_size=side, widths=widths, feat_dim=8))
    s, m, p = text(3)
    x = G(torch.randn(3, 8), s, m, p)
    assert x.shape == (3, channels, side, side)
    assert D(x, p).shape == (3,) and D(x, p).dtype == torch.float32
    assert GeneratorConfig.from_dict(json.loads(json.dumps(G.cfg.to_dict()))) == GeneratorConfig(
        out_channels=channels, out_size=side, z_dim=8, w_dim=16, widths={k: v for k, v in widths.items() if k <= side},
        attn=(8,), heads=2)


def test_cvae_loss_is_the_negative_elbo_per_dimension():
    cfg = CVAEConfig(in_channels=3, in_size=16, z_channels=2, z_size=4, w_dim=16, widths={4: 16, 8: 8, 16: 8},
                     attn=(8,), heads=2)
    vae = TextConditionalVAE(cfg)
    s, m, p = text(2)
    x, eps = torch.rand(2, 3, 16, 16) * 2 - 1, torch.randn(2, *vae.z_shape)
    loss1, logs = vae(x, eps, s, m, p, kl_weight=1.0)
    loss0, _ = vae(x, eps, s, m, p, kl_weight=0.0)
    torch.testing.assert_close(loss1, logs["rec_nll"] + logs["kl"] / x[0].numel())
    torch.testing.assert_close(loss0, logs["rec_nll"])
    assert vae.sample(eps, s, m, p, 0.5).shape == x.shape


@pytest.fixture(scope="module")
def tiny_pipes(tmp_path_factory):
    root = tmp_path_factory.mktemp("onepass")
    return {f: blinkgen.load(str(make_tiny(f, root / f))) for f in ("gan", "vae")}


@pytest.mark.parametrize("family, knob", [("gan", "truncation"), ("vae", "temperature")])
def test_knob_zero_removes_the_seed(tiny_pipes, family, knob):
    pipe = tiny_pipes[family]
    a, b = pipe.generate(["a red circle"] * 2, seed=0, **{knob: 0.0})
    assert np.array_equal(np.asarray(a), np.asarray(b))  # z = the mean: every seed the same image
    c, d = pipe.generate(["a red circle"] * 2, seed=0)
    assert not np.array_equal(np.asarray(c), np.asarray(d))
    assert pipe.settings(**{knob: 0.5}).to_dict()[knob] == 0.5


@pytest.mark.parametrize("family, knob", [("gan", "truncation"), ("vae", "temperature")])
def test_settings_are_refused_in_one_line(tiny_pipes, family, knob):
    pipe = tiny_pipes[family]
    for call, word in [(lambda: pipe.settings(steps=4), "steps"), (lambda: pipe.settings(guidance=3.0), "guidance"),
                       (lambda: pipe.settings(guidance=0.5), "guidance"), (lambda: pipe.settings(**{knob: 2.5}), knob),
                       (lambda: pipe.settings(**{knob: True}), knob), (lambda: pipe.settings(**{knob: -1}), knob)]:
        with pytest.raises(UserInputError, match=word) as e:
            call()
        assert "\n" not in str(e.value)


@pytest.mark.parametrize("family", ["gan", "vae"])
def test_style_phrase_from_the_model_folder(tmp_path, family):
    path = make_tiny(family, tmp_path / "m")
    cfg = json.loads((path / "config.json").read_text())
    cfg["styles"], cfg["defaults"] = ["noto emoji", "twemoji"], {**cfg["defaults"], "style": "twemoji"}
    (path / "config.json").write_text(json.dumps(cfg))
    pipe = blinkgen.load(str(path))
    a = pipe.generate("red heart", seed=3)[0]
    b = pipe.generate("red heart in twemoji style", seed=3, style="none")[0]
    assert a.tobytes() == b.tobytes()
    # a prompt naming another known style keeps it, not a blend with the default (regression)
    c = pipe.generate("red heart in noto emoji style", seed=3)[0]
    d = pipe.generate("red heart in noto emoji style", seed=3, style="none")[0]
    assert c.tobytes() == d.tobytes()
    with pytest.raises(UserInputError, match="unknown style"):
        pipe.settings(style="pixel art")


def test_folders_refuse_the_wrong_family_and_space(tmp_path):
    from blinkgen.families.vae.folder import load_vae_folder

    gan = make_tiny("gan", tmp_path / "g")
    with pytest.raises(ModelLoadError, match="not a vae model"):
        load_vae_folder(gan)
    cfg = json.loads((gan / "config.json").read_text())
    (gan / "config.json").write_text(json.dumps({**cfg, "space": "voxels"}))
    with pytest.raises(ModelLoadError, match="space"):
        blinkgen.load(str(gan))


@pytest.mark.parametrize("family", ["gan", "vae"])
def test_latent_space_tiny_round_trip(tmp_path, family):
    pipe = blinkgen.load(str(make_tiny(family, tmp_path / "m", space="latent")))
    assert pipe.space.kind == "latent" and pipe.space.side == 8
    again = blinkgen.load(str(pipe.save(tmp_path / "copy")))
    a = pipe.generate(["a red circle", "a blue square"], seed=5)
    b = again.generate(["a red circle", "a blue square"], seed=5)
    assert all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a, b))
