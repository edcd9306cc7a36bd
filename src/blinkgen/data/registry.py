"""One string names any training set, so the CLI, configs and the server share a single vocabulary:

    path/to/folder   a folder dataset (metadata.jsonl or sidecar .txt captions)
    emoji            the emoji dataset, built once into ~/.cache/blinkgen/datasets/emoji
    noto-font        Noto Color Emoji rendered from the installed font at the asked size (sharp at
                     128 px), built once into ~/.cache/blinkgen/datasets/noto-font-<size>
    shapes:N         N procedural shapes images (generated, nothing on disk)
    shapes           shapes:2000 (SHAPES_DEFAULT_N; also `train`'s default data)
    shapes:N:K[,K]   N shapes images of only those scene kinds (single, counted, two-groups, relation),
                     e.g. 'shapes:12000+shapes:6000:relation' with --order group --mix to oversample
    A+B              the concatenation of A and B (any of the above)
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from blinkgen.checks import as_int
from blinkgen.errors import UserInputError
from blinkgen.seeds import check_seed

if TYPE_CHECKING:  # the data types import torch; this module stays light (TrainConfig reads it)
    from blinkgen.data.types import ImageCaptionSet

SHAPES_DEFAULT_N = 2000  # "shapes" without a count
SPEC_FORMS = f"a folder path, 'emoji', 'noto-font', 'shapes:N' (N > 0; 'shapes' alone is {SHAPES_DEFAULT_N}; 'shapes:N:relation' only those scene kinds), or a mix 'A+B' of these"
_SHAPES = re.compile(r"^shapes(?::(\d+)(?::([a-z-]+(?:,[a-z-]+)*))?)?$")  # shapes[:N[:kind,kind]]


def default_emoji_dir() -> Path:
    return Path.home() / ".cache" / "blinkgen" / "datasets" / "emoji"


def _load_one(part: str, size: int, seed: int) -> ImageCaptionSet:
    from blinkgen.data.folder import load_folder  # lazy: keep `import blinkgen` light

    if part == "emoji":
        from blinkgen.data.emoji import build_emoji

        return load_folder(build_emoji(default_emoji_dir()), size)
    if part == "noto-font":
        from blinkgen.data.emoji import build_noto_font, default_noto_font_dir

        return load_folder(build_noto_font(default_noto_font_dir(size), size), size)
    m = _SHAPES.match(part)
    if m and m.group(1) is None and Path(os.path.expanduser(part)).is_dir():
        raise UserInputError(f"dataset {part!r} is ambiguous: a folder of that name exists; write "
                             f"./{part} for the folder or shapes:{SHAPES_DEFAULT_N} for the procedural set")
    if m:
        n = SHAPES_DEFAULT_N if m.group(1) is None else int(m.group(1))
        if n < 1:
            raise UserInputError(f"dataset {part!r}: N must be at least 1")
        from blinkgen.data.shapes import make_shapes  # another engineer's module, loaded on use

        return make_shapes(n=n, seed=seed, size=size, kinds=None if m.group(2) is None else tuple(m.group(2).split(",")))
    if part.startswith("shapes"):
        raise UserInputError(f"dataset {part!r}: write shapes:N with N a positive integer, e.g. shapes:2000, "
                             "optionally :KIND[,KIND] for only those scene kinds (single, counted, two-groups, "
                             "relation), e.g. shapes:6000:relation")
    path = Path(os.path.expanduser(part))
    if path.is_dir():
        return load_folder(path, size)
    what = "no such folder" if not path.exists() else "not a folder"
    raise UserInputError(f"dataset {part!r}: {what}; a dataset is {SPEC_FORMS}")


def _split_spec(spec: str) -> list[str]:
    """Split on '+', but keep the longest run of pieces that names an existing folder whole, so
    a folder called 'cats+dogs' is still one folder, alone or in a mix."""
    pieces = spec.split("+")
    parts, i = [], 0
    while i < len(pieces):
        j = next((j for j in range(len(pieces), i + 1, -1)
                  if Path(os.path.expanduser("+".join(pieces[i:j]).strip())).is_dir()), i + 1)
        parts.append("+".join(pieces[i:j]).strip())
        i = j
    return parts


def load_dataset(spec: str, size: int = 64, seed: int = 0) -> ImageCaptionSet:
    """Load the dataset named by `spec` at size x size. In a mix, the k-th shapes part uses
    seed + k, so 'shapes:500+shapes:500' is 1000 different images, not one set twice.
    size and seed take anything integral (checks.as_int); seed is in [0, 2^63 - 1]."""
    size = as_int(size, "size", 1)
    seed = check_seed(seed)
    if not isinstance(spec, str) or not spec.strip():
        raise UserInputError(f"empty dataset spec; a dataset is {SPEC_FORMS}")
    spec = spec.strip()
    parts = _split_spec(spec)
    if any(not p for p in parts):
        raise UserInputError(f"dataset {spec!r} has an empty part; a dataset is {SPEC_FORMS}")
    sets, k = [], 0
    for part in parts:
        sets.append(_load_one(part, size, seed + k))
        k += bool(_SHAPES.match(part))
    if len(sets) == 1:
        return sets[0]
    from blinkgen.data.types import ImageCaptionSet

    return ImageCaptionSet.concat(sets)
