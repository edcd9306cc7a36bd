"""Simple diffusion's multiscale loss (`--multiscale-loss K`, sampling/flow.multiscale_mse): K = 0
is plain MSE bit for bit; each extra scale adds the MSE of both tensors average-pooled 2x
further, so error that averages out within a block adds nothing there and a uniform offset counts
once per scale; bad sides and counts are refused; the diffusion task's loss reads the run's K;
the setting is checked where it is set."""
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from blinkgen.errors import UserInputError
from blinkgen.sampling.flow import multiscale_mse
from blinkgen.train.config import TrainConfig


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), k=st.integers(0, 3), side=st.sampled_from([8, 16]))
def test_each_scale_adds_the_pooled_mse(seed, k, side):
    g = torch.Generator().manual_seed(seed)
    a, b = torch.randn(3, 4, side, side, generator=g), torch.randn(3, 4, side, side, generator=g)
    want = sum(F.mse_loss(F.avg_pool2d(a, 2 ** j), F.avg_pool2d(b, 2 ** j)) for j in range(k + 1))
    got = multiscale_mse(a, b, k)
    assert torch.allclose(got, want, rtol=1e-5) and got >= F.mse_loss(a, b) - 1e-6
    if k == 0:
        assert torch.equal(got, F.mse_loss(a, b))  # off = plain MSE, bit for bit


def test_coarse_scales_weigh_layout_not_detail():
    zero = torch.zeros(1, 1, 16, 16)
    checker = (torch.arange(16).view(-1, 1) + torch.arange(16)).remainder(2).float().mul(2).sub(1)  # +-1
    detail = checker.expand(1, 1, 16, 16)  # averages to 0 in every 2x2 block
    assert multiscale_mse(detail, zero, 3).item() == pytest.approx(1.0)  # counted at full resolution only
    offset = torch.ones(1, 1, 16, 16)  # a blob's worth of error that no pooling averages away
    assert multiscale_mse(offset, zero, 3).item() == pytest.approx(4.0)
    left = torch.zeros(1, 1, 16, 16)
    left[..., :8] = 1.0  # "the blob is left, not right": survives down to 2x2
    assert multiscale_mse(left, zero, 3).item() == pytest.approx(4 * 0.5)


def test_bad_arguments_are_refused():
    x = torch.zeros(1, 1, 12, 12)
    with pytest.raises(ValueError, match="halved"):
        multiscale_mse(x, x, 3)  # 12 -> 6 -> 3 -> no
    assert multiscale_mse(x, x, 2).item() == 0.0
    with pytest.raises(ValueError, match=">= 0"):
        multiscale_mse(x, x, -1)


def test_config_takes_it_for_new_diffusion_models_only():
    assert TrainConfig(family="diffusion", multiscale_loss=3).validate().multiscale_loss == 3
    for bad in ({"multiscale_loss": -1}, {"multiscale_loss": 5}, {"family": "gan", "multiscale_loss": 2},
                {"family": "diffusion", "task": "lora", "base": "default", "multiscale_loss": 2}):
        with pytest.raises(UserInputError, match="multiscale_loss"):
            TrainConfig(**bad).validate()


class _Captions:
    def draw(self, idx, *rest):
        return torch.zeros_like(idx)


@pytest.mark.parametrize("k", [0, 2])
def test_the_diffusion_task_trains_on_the_runs_scales(k):
    from blinkgen.families.diffusion.tasks import DiffusionTask
    from blinkgen.sampling.flow import interpolate, velocity_target

    task = object.__new__(DiffusionTask)  # loss() reads the config, latents, captions and text
    task.cfg = TrainConfig(family="diffusion", multiscale_loss=k)
    task.device, task.null_id, task.captions = "cpu", 0, _Captions()
    task.latents = torch.randn(6, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    task.text = lambda cid: (None, None, None)
    rnd = task.draw(torch.Generator().manual_seed(1), 6)
    model = lambda x, t, *text: 0.5 * x  # noqa: E731 - any fixed network
    idx = torch.arange(6)
    loss, _ = task.loss(model, idx, rnd)
    x0, noise = task.latents, rnd["noise"]
    pred = 0.5 * interpolate(x0, noise, rnd["t"])
    assert torch.equal(loss, multiscale_mse(pred, velocity_target(x0, noise), k))
    if k:
        assert loss > F.mse_loss(pred, velocity_target(x0, noise))
