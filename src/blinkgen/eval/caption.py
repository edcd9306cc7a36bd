"""The first captioner: rank candidate captions by the contrastive pair's image-text similarity.

Why retrieval and not a decoder: the evaluator already places images and captions in one space,
so "which of these captions fits" costs one CNN pass and a matrix product. It can only say what
the candidates say; by default they are the captions the evaluator was trained on (shipped as
captions.txt beside its weights, with their embeddings precomputed).
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from ..checks import as_int
from ..data.image_io import read_image, to_rgb_square
from ..errors import UserInputError
from ..textio import read_lines
from .contrastive import Evaluator, candidate_embeddings, load_evaluator, read_captions


def _open_image(image, size: int):
    """Any picture a user gives (path, bytes, PIL image, array) -> size x size RGB, through the
    one shared reader and the training geometry: the pixels the training loader would see
    (16-bit, EXIF rotation, transparency on white, padded to a square), and ImageReadError (one
    line, exit 2) for unreadable or oversize files."""
    return to_rgb_square(read_image(image), size)


def _candidates(candidates, ev: Evaluator) -> list[str]:
    if candidates is None:
        if ev.folder is None:
            raise UserInputError("this evaluator has no folder, so no shipped captions: pass candidates")
        return read_captions(ev.folder)
    if isinstance(candidates, (str, Path)):
        candidates = read_lines(candidates, "candidates file")
    out = list(dict.fromkeys(c.strip() for c in candidates if c and c.strip()))  # distinct, in order
    if not out:
        raise UserInputError("no candidate captions given")
    return out


def caption(image, candidates=None, top_k: int = 5, evaluator=None) -> list[tuple[str, float]]:
    """The top_k candidates for `image` (a path, bytes, PIL image or HWC array) as
    (caption, cosine similarity), best first. candidates: None (the shipped captions), a list of
    strings, or a text file with one caption per line. evaluator: None (shipped) or a folder."""
    top_k = as_int(top_k, "top_k", 1)
    ev = evaluator if isinstance(evaluator, Evaluator) else load_evaluator(evaluator)
    texts = _candidates(candidates, ev)
    img = ev.embed_images([_open_image(image, ev.image_size)])  # (1, D)
    txt = candidate_embeddings(ev, texts)  # (T, D)
    sim = (F.normalize(img, dim=-1) @ F.normalize(txt, dim=-1).T)[0]  # (T,)
    k = min(top_k, len(texts))
    # stable order for equal scores: by similarity, then by candidate position
    order = sorted(range(len(texts)), key=lambda i: (-float(sim[i]), i))[:k]
    return [(texts[i], float(sim[i])) for i in order]


def caption_batch(images, candidates=None, top_k: int = 5, evaluator=None) -> list[list[tuple[str, float]]]:
    """caption() for many images with one candidate encode."""
    top_k = as_int(top_k, "top_k", 1)
    ev = evaluator if isinstance(evaluator, Evaluator) else load_evaluator(evaluator)
    texts = _candidates(candidates, ev)
    txt = F.normalize(candidate_embeddings(ev, texts), dim=-1)
    img = F.normalize(ev.embed_images([_open_image(i, ev.image_size) for i in images]), dim=-1)
    sim = img @ txt.T  # (N, T)
    top = torch.topk(sim, min(top_k, len(texts)), dim=1)
    return [[(texts[j], float(v)) for v, j in zip(vals.tolist(), idx.tolist())] for vals, idx in zip(top.values, top.indices)]
