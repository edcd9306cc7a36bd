"""replay.same_as_recorded: a flag given at its recorded value is no change (generate --from)."""
from hypothesis import given
from hypothesis import strategies as st

from blinkgen.replay import same_as_recorded


@given(st.floats(-50, 50, allow_nan=False))
def test_a_number_matches_itself_typed_or_as_text(x):
    assert same_as_recorded("guidance", x, {"guidance": x})
    assert same_as_recorded("guidance", repr(x), {"guidance": x})
    assert not same_as_recorded("guidance", x + 1, {"guidance": x})


def test_names_and_odd_cases():
    rec = {"seed": 3, "seeds": [5, 6], "negative_prompt": "green", "sampler": "heun", "guidance_interval": [0.2, 0.8]}
    assert same_as_recorded("seed", 5, rec) and not same_as_recorded("seed", 3, rec)  # a grid's first seed
    assert same_as_recorded("negative", "green", rec) and not same_as_recorded("negative", "Green", rec)
    assert same_as_recorded("style", "Twemoji", {"style": "twemoji"})  # style names match in any case
    assert same_as_recorded("dtype", "fp32", {}) and not same_as_recorded("dtype", "bf16", {})  # fp32 goes unrecorded
    assert not same_as_recorded("guidance_interval", "0.2,0.8", rec)  # no plain value: still a change
    assert not same_as_recorded("steps", 8, {}) and not same_as_recorded("steps", "x", {"steps": 8})
