"""The diffusion denoisers behind one registry: same interface, zero-map start, a model folder that
round-trips bit for bit, and the training loop runs each preset family."""
import pytest
import torch

from blinkgen.models.denoisers import ARCHS, PRESETS, arch_of, build, config_dict, from_preset


def _inputs(B=3, S=16, L=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(B, L, dtype=torch.bool)
    mask[0, 4:] = False
    return (torch.randn(B, 4, S, S, generator=g), torch.rand(B, generator=g), torch.randn(B, L, 384, generator=g),
            mask, torch.randn(B, 384, generator=g))


@pytest.mark.parametrize("preset", ["tiny", "uvit-tiny", "uvit-tiny-joint", "unet-tiny"])
def test_interface_zero_start_and_batch_independence(preset):
    torch.manual_seed(0)
    net = from_preset(preset, 4, 16)
    x, t, ctx, mask, pooled = _inputs()
    v = net(x, t, ctx, mask, pooled)
    assert v.shape == x.shape and v.dtype == torch.float32
    assert torch.count_nonzero(v) == 0  # every residual branch and the head start at zero
    with torch.no_grad():  # perturb so the output depends on everything
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    v = net(x, t, ctx, mask, pooled)
    one = net(x[1:2], t[1:2], ctx[1:2], mask[1:2], pooled[1:2])
    torch.testing.assert_close(v[1:2], one, atol=1e-5, rtol=1e-4)  # no batch-mate leaks in
    ctx2 = ctx.clone()
    ctx2[0, 4:] = 99.0  # padded positions of sample 0 are masked: they must not matter
    torch.testing.assert_close(net(x, t, ctx2, mask, pooled)[0], v[0], atol=1e-5, rtol=1e-4)
    v.square().mean().backward()
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_registry_round_trip(arch):
    preset = next(n for n, (a, _) in PRESETS.items() if a == arch and "tiny" in n)
    net = from_preset(preset, 4, 16)
    assert arch_of(net) == arch
    again = build(arch, config_dict(net))
    assert config_dict(again) == config_dict(net)


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["uvit-tiny", "uvit-tiny-joint", "unet-tiny"])
def test_train_save_load_generate(preset, tmp_path, tiny_model_dir):
    from conftest import run_cli
    import blinkgen
    out = tmp_path / "run"
    run_cli("train", "--family", "diffusion", "--data", "shapes:24", "--size", "32", "--preset", preset,
            "--autoencoder", tiny_model_dir / "autoencoder", "--out", out, "--steps", 4, "--batch-size", 4,
            "--eval-every", 2, "--sample-every", 0, "--ckpt-every", 2)
    gen = blinkgen.load(str(out / "model"))
    assert gen.config["arch"] == preset.split("-")[0]
    a = gen.generate("a red circle", seed=3, steps=2)[0]
    b = blinkgen.load(str(out / "model")).generate("a red circle", seed=3, steps=2)[0]
    assert a.tobytes() == b.tobytes()


def test_joint_text_mode_uses_the_text_and_trims_padding_only_in_training():
    """U-ViT's joint mode: the text tokens join the sequence (no cross-attention); a training
    forward drops the batch's all-padding tail, which must not change the result; the step cache
    runs it like the network."""
    from blinkgen.speed.step_cache import StepCache
    from blinkgen.models.uvit import UViT, UViTConfig
    torch.manual_seed(0)
    net = UViT(UViTConfig(hidden=64, depth=4, heads=2, stem_channels=16, text_mode="joint"))
    assert all(b.cross is None for b in [*net.in_blocks, *net.out_blocks])
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    x, t, ctx, mask, pooled = _inputs(L=12)
    mask[:, 9:] = False  # every row padded from 9: a training forward keeps 9 text tokens
    net.eval()
    with torch.no_grad():
        v = net(x, t, ctx, mask, pooled)
        ctx2 = ctx.clone()
        ctx2[1, 2] += 1.0  # a real token of sample 1 changes its output
        assert (net(x, t, ctx2, mask, pooled)[1] - v[1]).abs().max() > 1e-4
        assert torch.equal(StepCache(net, 2, 1)(x, t, ctx, mask, pooled), v)
        net.train()
        torch.testing.assert_close(net(x, t, ctx, mask, pooled), v, atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="at most 32"):
        net(x, t, torch.randn(3, 33, 384), torch.ones(3, 33, dtype=torch.bool), pooled)
