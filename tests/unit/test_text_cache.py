"""encode_cached: encoding in chunks into one preallocated float16 table gives exactly what one
call gives (the cache's values), and a second call reads the cache back identically."""
import torch

from blinkgen.text.encoder import encode_cached


def test_chunked_equals_one_call_and_cache_round_trips(tmp_path):
    caps = [f"{w} {i}" * (1 + i % 4) for i, w in enumerate(["red heart", "a small blue square", "flag: Japan"] * 100)]
    whole = encode_cached(caps, None, chunk=10_000)
    parts = encode_cached(caps, tmp_path, chunk=256)  # 2 chunks, then written to the cache
    for a, b in zip(_t(whole), _t(parts)):
        assert a.dtype == b.dtype and torch.equal(a, b)
    assert whole.states.dtype == torch.float16 and whole.pooled.dtype == torch.float32
    again = encode_cached(caps, tmp_path)
    for a, b in zip(_t(parts), _t(again)):
        assert torch.equal(a, b)


def _t(tb):
    return tb.states, tb.mask, tb.pooled
