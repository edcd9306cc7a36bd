"""batch_invariance.stabilise: a row's output of a stabilised Linear / Conv2d is bit-identical
whatever the number of rows it shares the call with (the CPU kernels' small-batch paths round
differently: see the module docstring), and the padding changes no real row's shape."""
from __future__ import annotations

import torch
from torch import nn

from blinkgen.batch_invariance import stabilise


def test_linear_rows_do_not_depend_on_batch_mates():
    torch.manual_seed(0)
    lin = stabilise(nn.Linear(384, 384))
    x = torch.randn(8, 384)
    full = lin(x)
    for rows in (1, 2, 3, 4):
        assert torch.equal(lin(x[:rows]), full[:rows]), rows
    assert lin(x[:1, None]).shape == (1, 1, 384)  # leading dims kept


def test_conv_batch_of_one_equals_its_row_in_a_batch():
    torch.manual_seed(0)
    conv = stabilise(nn.Conv2d(4, 32, 3, padding=1))
    x = torch.randn(3, 4, 16, 16)
    assert torch.equal(conv(x[:1]), conv(x)[:1])


def test_parameters_and_state_dict_are_untouched():
    net = nn.Sequential(nn.Linear(4, 4), nn.Conv2d(2, 2, 1))
    keys = list(net.state_dict())
    stabilise(net)
    assert list(net.state_dict()) == keys and "forward" in vars(net[0])
