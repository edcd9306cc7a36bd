"""The caption table: every caption string a run can train on, encoded once, and per image the ids
of its captions, plain and with a style phrase.

Why styles: the emoji set has two drawings of every subject (Noto, Twemoji). Trained on plain
names, "red heart" asks for the average of two drawings -- a blur. So on most draws (`style_prob`)
the caption carries the image's style: "red heart in twemoji style"; generation then appends the
model's default style (a recorded setting) and asks for one drawing. Images without a style
(shapes, user folders) take a style phrase drawn from the set's styles on those draws, so a
style phrase never changes what a shapes caption means. A set with no styles trains on plain
captions only.
"""
from __future__ import annotations

import torch

from ..text.encoder import TEXT_LAYERS, TextBatch, encode_cached, text_cache_dir
from ..text.style import styled  # noqa: F401  (the tasks import it from here too)


class CaptionTable:
    """strings[i]: a unique caption; ids are indices into it.

    plain: (N, K) int64, image n's captions (padded by repeating its first); count: (N,) number of
    real captions; with_style: (N, K, S) the same captions with a style phrase, S = number of styles
    in the set (for a styled image all S columns hold its own style). S = 0 when no image has a
    style. `extra` strings (the null prompt, validation prompts) are added to `strings` too."""

    def __init__(self, captions: list[list[str]], styles: list[str] | None, extra: list[str] = ()):
        styles = list(styles) if styles is not None else [""] * len(captions)
        self.styles = sorted({s for s in styles if s})
        S = len(self.styles)
        K = max(len(c) for c in captions)
        rows_plain, rows_styled = [], []
        for caps, st in zip(captions, styles):
            pad = list(caps) + [caps[0]] * (K - len(caps))
            rows_plain.append(pad)
            cols = [st] * S if st else self.styles
            rows_styled.append([[styled(c, s, self.styles) for s in cols] for c in pad])
        uniq = sorted({c for r in rows_plain for c in r} | {c for r in rows_styled for k in r for c in k} | set(extra))
        self.strings = uniq
        self.pos = {c: i for i, c in enumerate(uniq)}
        self.plain = torch.tensor([[self.pos[c] for c in r] for r in rows_plain])  # (N, K)
        self.count = torch.tensor([len(c) for c in captions])  # (N,)
        self.with_style = torch.tensor([[[self.pos[c] for c in k] for k in r] for r in rows_styled]).view(len(captions), K, S)

    def to(self, device) -> "CaptionTable":
        self.plain, self.count, self.with_style = (t.to(device) for t in (self.plain, self.count, self.with_style))
        return self

    def draw(self, idx: torch.Tensor, u: torch.Tensor, u_style: torch.Tensor | None = None,
             u_pick: torch.Tensor | None = None, style_prob: float = 0.0) -> torch.Tensor:
        """Caption ids (b,) for images idx (b,): caption k = floor(u * count); with probability
        `style_prob` (u_style < style_prob) its styled form, style column floor(u_pick * S).
        u, u_style, u_pick: (b,) uniform in [0, 1), on the table's device (u_style and u_pick
        are only read when style_prob > 0)."""
        k = (u * self.count[idx]).long().clamp(max=self.plain.shape[1] - 1)
        cid = self.plain[idx, k]
        S = self.with_style.shape[2]
        if S == 0 or style_prob <= 0:
            return cid
        j = (u_pick * S).long().clamp(max=S - 1)
        return torch.where(u_style < style_prob, self.with_style[idx, k, j], cid)


def encode_captions(strings: list[str], device, layers: int = TEXT_LAYERS) -> TextBatch:
    """MiniLM encodings (after `layers` of its layers) of a table's strings (U rows), kept in the content-hashed text cache
    (`text.encoder.text_cache_dir`), so runs over the same captions share them. Encoded on the
    device if it is a GPU, else on the CPU; returned on the CPU."""
    enc_dev = str(device) if str(device).startswith("cuda") else "cpu"
    return encode_cached(strings, text_cache_dir(), device=enc_dev, layers=layers)
