"""Guidance on top of a guidance-distilled model over-drives it (the README's old examples did
this to the default: 7 of 8 "a red circle" images became blobs on black). The pipeline warns,
once per pipeline, and not for a model sampled with guidance by design."""
import json
import logging

import blinkgen
from conftest import make_tiny


def test_guidance_above_1_on_a_distilled_model_warns_once(tmp_path, caplog):
    path = make_tiny("diffusion", tmp_path / "m")
    plain = blinkgen.load(str(path))
    with caplog.at_level(logging.WARNING):
        plain.settings(guidance=3.0)
    assert "folded" not in caplog.text  # an undistilled model is sampled with guidance

    cfg = json.loads((path / "config.json").read_text())
    cfg["distilled"] = {"guidance": 3.0}
    (path / "config.json").write_text(json.dumps(cfg))
    pipe = blinkgen.load(str(path))
    with caplog.at_level(logging.WARNING):
        pipe.settings(guidance=1.0)
        assert "folded" not in caplog.text
        pipe.settings(guidance=2.0)
        pipe.settings(guidance=4.0)
    assert caplog.text.count("distilled with guidance 3.0 folded into the network") == 1
