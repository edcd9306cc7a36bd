"""Style phrases: how a caption names the drawing style ("red heart in twemoji style").

One home for the phrase, shared by training (train/captions.py adds it to most caption draws) and
generation (the diffusion pipeline's `style` setting appends it to the prompt), so the two can
never drift apart.
"""
from __future__ import annotations

NO_STYLE = ("", "none")  # what a user writes to turn a model's default style off
MAX_STYLE_CHARS = 64


def style_key(style: str) -> str:
    """What two style names are compared by: "Twemoji " and "twemoji" are one style (the text
    encoder is uncased). Used by the pipeline's style check and by replay's change list."""
    return style.strip().casefold()


def names_style(caption: str, styles) -> bool:
    """Whether `caption` already names one of `styles` ("... in noto emoji style"), in any case:
    the text encoder (MiniLM, uncased) reads "Noto Emoji" as "noto emoji"."""
    low = caption.lower()
    return any(s and f"{s.lower()} style" in low for s in styles)


def styled(caption: str, style: str | None, known=()) -> str:
    """'<caption> in <style> style', unless the style is empty or the caption already names it or
    any style in `known` (the styles the model was trained on). A prompt that asks for one style
    keeps it: appending the default too would ask for a blend of two drawings
    ("red heart in noto emoji style in twemoji style")."""
    if not style or names_style(caption, (style, *known)):
        return caption
    return f"{caption} in {style} style"
