"""A word-level vocabulary built from training captions: the captioner's tokenizer.

Why words, not MiniLM's WordPiece or characters: the captioner writes captions of one closed
domain (emoji names, the shapes grammar). The default data's primary captions use ~2,000 distinct
words, so a word vocabulary costs 2,000 embedding rows where WordPiece costs 30,522 (a 128-wide
tied embedding: 0.26M parameters instead of 3.9M, most of the 3 MB budget), and a caption is
3-20 tokens where characters make it 10-80 (decoding time grows with the length). What it cannot
write is a word it never saw (it becomes <unk>), which a captioner of a closed domain never needs.

Tokens keep their leading space (" heart", ":", " Japan"), so decode(encode(t)) == t for every
single-spaced caption built from known words: punctuation ("flag: Japan", "bosnia & herzegovina")
comes back exactly.
"""
from __future__ import annotations

import re
from collections import Counter

import torch

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIALS = (PAD, BOS, EOS, UNK)
_TOKEN = re.compile(r" ?\w+| ?[^\w\s]")


def split_words(text: str) -> list[str]:
    """'flag: Japan' -> ['flag', ':', ' Japan'] (whitespace runs read as one space)."""
    return _TOKEN.findall(" ".join(text.split()))


class WordVocab:
    """tokens[i] is the text of id i; ids 0-3 are <pad>, <bos>, <eos>, <unk>."""

    def __init__(self, tokens: list[str]):
        if tuple(tokens[:len(SPECIALS)]) != SPECIALS:
            raise ValueError(f"a vocabulary starts with {SPECIALS}")
        if len(set(tokens)) != len(tokens):
            raise ValueError("vocabulary tokens must be distinct")
        self.tokens = list(tokens)
        self.ids = {t: i for i, t in enumerate(self.tokens)}
        self.pad, self.bos, self.eos, self.unk = (self.ids[t] for t in SPECIALS)

    @staticmethod
    def build(captions: list[str], min_count: int = 1) -> "WordVocab":
        """Every token of `captions` seen at least min_count times, most frequent first (ties by text)."""
        counts = Counter(t for c in captions for t in split_words(c))
        words = sorted((t for t, n in counts.items() if n >= min_count), key=lambda t: (-counts[t], t))
        return WordVocab([*SPECIALS, *words])

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, text: str) -> list[int]:
        """Word ids of text, without <bos>/<eos>; unknown words -> <unk>."""
        return [self.ids.get(t, self.unk) for t in split_words(text)]

    def decode(self, ids) -> str:
        """Ids -> text, stopping at <eos>, skipping <pad> and <bos>."""
        out = []
        for i in (ids.tolist() if torch.is_tensor(ids) else ids):
            if i == self.eos:
                break
            if i not in (self.pad, self.bos):
                out.append(self.tokens[i] if 0 <= i < len(self.tokens) else UNK)
        return "".join(out).strip()

    def batch(self, texts: list[str], max_len: int) -> torch.Tensor:
        """(B, max_len + 2) long: <bos> ids (cut to max_len) <eos>, padded with <pad>."""
        rows = [[self.bos, *self.encode(t)[:max_len], self.eos] for t in texts]
        out = torch.full((len(rows), max_len + 2), self.pad, dtype=torch.long)
        for r, ids in enumerate(rows):
            out[r, :len(ids)] = torch.tensor(ids)
        return out

    def to_list(self) -> list[str]:
        return list(self.tokens)
