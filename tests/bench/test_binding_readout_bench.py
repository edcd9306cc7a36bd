"""bench/bench_binding_readout.py: its targets hold the relation (so its score can tell a read-out
that learnt the binding from a blind one), and a short run reports a well-formed curve."""
from __future__ import annotations

import torch
from benchload import load_bench


def test_targets_hold_their_relation_and_a_short_run_reports_its_curve():
    bench = load_bench("bench_binding_readout")
    x, caps = bench.scenes(24, 5)
    assert x.shape == (24, 3, 8, 8) and float(x.min()) >= -1 and float(x.max()) <= 1
    off = bench.held_out_offsets(x, caps)
    assert (off > 0).all()  # every render, averaged to 8x8, still points the right way
    blind = bench.held_out_offsets(x.mean(0, keepdim=True).expand_as(x).clone(), caps)
    assert abs(float(blind.mean())) < abs(float(off.mean()))  # one picture for all captions: no relation
    torch.set_num_threads(1)
    r = bench.run(6, steps=20, every=10, lr=1e-3, n_train=64, n_test=16)
    assert [c["step"] for c in r["curve"]] == [10, 20]
    assert all(0 <= c["right_way"] <= 1 for c in r["curve"]) and r["targets_right_way"] == 1.0
