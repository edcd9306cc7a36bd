"""EMA warm-up: where a named decay is reached, and that a short run says its EMA lengths coincide
(the fault: --ema-extra 0.9995 beside --ema-decay 0.999 exported byte-identical folders for every
run under 8,991 steps, silently)."""
import torch
from hypothesis import given, strategies as st

from blinkgen.train.ema import EMA, reached_at, short_run_warnings, warm_decay


def test_reached_at_known_values():
    assert reached_at(0.999) == 8990
    assert reached_at(0.9995) == 17990
    assert reached_at(0.5) == 8  # (1 + 8) / 18 = 0.5


@given(st.floats(min_value=0.05, max_value=0.99995))
def test_reached_at_is_the_first_step(decay):
    s = reached_at(decay)
    assert warm_decay(decay, s) == decay
    assert s == 0 or warm_decay(decay, s - 1) < decay


def test_two_decays_are_identical_before_either_is_reached():
    torch.manual_seed(0)
    net = torch.nn.Linear(4, 4)
    a, b = EMA(net, 0.999), EMA(net, 0.9995)
    for step in range(50):
        with torch.no_grad():
            net.weight.add_(torch.randn_like(net.weight))
        a.update(net, step)
        b.update(net, step)
    assert torch.equal(a.model.weight, b.model.weight)


def test_short_run_warnings():
    lines = short_run_warnings(3800, 0.999, [0.9995])
    assert len(lines) == 2
    assert "reached only at step 8,990" in lines[0]
    assert "--ema-extra 0.9995 will export the same weights as --ema-decay 0.999" in lines[1]
    # long enough for the main decay: the first unreached extra length is told where it ends,
    # and the later unreached ones that they copy it
    lines = short_run_warnings(12000, 0.999, [0.9995, 0.9999])
    assert len(lines) == 2
    assert lines[0].startswith("--ema-extra 0.9995 is reached only at step 17,990: with 12,000 steps")
    assert f"ends at decay {12000 / 12009:.5f}" in lines[0]
    assert lines[1] == "--ema-extra 0.9999 will export the same weights as --ema-extra 0.9995"
    # one unreached extra length, not a copy of anything: still told (it was silent before)
    assert len(short_run_warnings(11500, 0.999, [0.9995])) == 1
    assert short_run_warnings(20000, 0.999, [0.9995]) == []
    assert short_run_warnings(100, 0.9, []) == []
