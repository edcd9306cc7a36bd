"""Style phrases: how a caption names the drawing style ("red heart in twemoji style").

One home for the phrase, shared by training (train/captions.py adds it to most caption draws) and
generation (the diffusion pipeline's `style` setting appends it to the prompt), so the two can
never drift apart.
"""
from __future__ import annotations

NO_STYLE = ("", "none")  # what a user writes to turn a model's default style off
MAX_STYLE_CHARS = 64


def styled(caption: str, style: str | None) -> str:
    """'<caption> in <style> style', unless the style is empty or the caption already names it."""
    if not style or f"{style} style" in caption:
        return caption
    return f"{caption} in {style} style"
