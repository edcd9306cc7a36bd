"""The diffusion `style` setting: the model's default style is appended to the prompt exactly as
training wrote it, "none" turns it off, an unknown style is refused in one line, and the PNG
records it."""
import json

import pytest

import blinkgen
from blinkgen.errors import UserInputError
from blinkgen.text.style import styled
from conftest import make_tiny


@pytest.fixture(scope="module")
def styled_model(tmp_path_factory):
    path = make_tiny("diffusion", tmp_path_factory.mktemp("style") / "m")
    cfg = json.loads((path / "config.json").read_text())
    cfg["styles"] = ["noto emoji", "twemoji"]
    cfg["defaults"] = {**cfg["defaults"], "style": "twemoji"}
    (path / "config.json").write_text(json.dumps(cfg))
    return path


def test_default_style_is_the_training_phrase(styled_model):
    pipe = blinkgen.load(str(styled_model))
    assert pipe.settings().style == "twemoji"
    a = pipe.generate("red heart", seed=3, steps=2)[0]
    b = pipe.generate("red heart in twemoji style", seed=3, steps=2, style="none")[0]
    assert a.tobytes() == b.tobytes()
    c = pipe.generate("red heart", seed=3, steps=2, style="none")[0]
    assert c.tobytes() != a.tobytes()
    d = pipe.generate("red heart", seed=3, steps=2, style="noto emoji")[0]
    assert d.tobytes() != a.tobytes()


def test_unknown_style_refused_and_recorded(styled_model, tmp_path):
    pipe = blinkgen.load(str(styled_model))
    with pytest.raises(UserInputError, match="unknown style 'pixel art'.*twemoji"):
        pipe.settings(style="pixel art")
    assert "style" not in pipe.settings(style="none").to_dict()
    assert pipe.png_parameters("x", 0, pipe.settings())["style"] == "twemoji"


def test_a_known_style_in_another_case_is_that_style(styled_model):
    """"Twemoji" was refused as an unknown style; now it is "twemoji": same image, same record."""
    pipe = blinkgen.load(str(styled_model))
    assert pipe.settings(style="Twemoji").style == "twemoji"
    assert pipe.settings(style=" NOTO Emoji").style == "noto emoji"
    assert pipe.settings(style="None").style is None and pipe.settings(style=" NONE ").style is None
    a = pipe.generate("red heart", seed=3, steps=2, style="TWEMOJI")[0]
    assert a.tobytes() == pipe.generate("red heart", seed=3, steps=2)[0].tobytes()
    assert pipe.png_parameters("x", 0, pipe.settings(style="TwEmoji"))["style"] == "twemoji"


def test_models_without_styles_take_any_phrase(tmp_path):
    pipe = blinkgen.load(str(make_tiny("diffusion", tmp_path / "plain")))
    assert pipe.settings().style is None
    assert pipe.settings(style="pixel art").style == "pixel art"


@pytest.mark.parametrize("caption,style,want", [("x", None, "x"), ("x", "", "x"), ("x", "a", "x in a style"),
                                                ("x in a style", "a", "x in a style")])
def test_styled(caption, style, want):
    assert styled(caption, style) == want


@pytest.mark.parametrize("caption,style,want", [
    ("x in noto emoji style", "twemoji", "x in noto emoji style"),  # the prompt's own style wins
    ("x in Noto Emoji style", "twemoji", "x in Noto Emoji style"),  # in any case (the encoder is uncased)
    ("x in twemoji style", "noto emoji", "x in twemoji style"),
    ("x in pixel style", "twemoji", "x in pixel style in twemoji style"),  # not a style the model knows
    ("x", "twemoji", "x in twemoji style")])
def test_styled_keeps_a_known_style_the_prompt_names(caption, style, want):
    assert styled(caption, style, ("noto emoji", "twemoji")) == want


def test_prompt_naming_a_style_is_not_blended_with_the_default(styled_model):
    """Regression: "red heart in noto emoji style" under the default style twemoji was encoded as
    "... in noto emoji style in twemoji style", a blend of the two drawings."""
    pipe = blinkgen.load(str(styled_model))
    a = pipe.generate("red heart in noto emoji style", seed=3, steps=2)[0]
    b = pipe.generate("red heart in noto emoji style", seed=3, steps=2, style="none")[0]
    assert a.tobytes() == b.tobytes()
    c = pipe.generate("red heart", seed=3, steps=2, style="noto emoji")[0]
    assert c.tobytes() == a.tobytes()


def test_guidance_interval(styled_model):
    pipe = blinkgen.load(str(styled_model))
    s = pipe.settings(guidance_interval="0.2,0.8")
    assert s.guidance_interval == (0.2, 0.8) and s.to_dict()["guidance_interval"] == (0.2, 0.8)
    assert pipe.settings(guidance_interval=(0, 1)).guidance_interval is None  # the whole path = plain CFG
    full = pipe.sample([blinkgen.Request("red heart", 1)], pipe.settings(steps=4, guidance=3.0))
    part = pipe.sample([blinkgen.Request("red heart", 1)], pipe.settings(steps=4, guidance=3.0, guidance_interval="0.3,0.8"))
    none = pipe.sample([blinkgen.Request("red heart", 1)], pipe.settings(steps=4, guidance=1.0))
    assert part.images[0].tobytes() not in (full.images[0].tobytes(), none.images[0].tobytes())
    for bad in ("0.8,0.2", "x", (0.1, 1.5)):
        with pytest.raises(UserInputError, match="guidance_interval"):
            pipe.settings(guidance_interval=bad)
