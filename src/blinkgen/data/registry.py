"""One string names any training set, so the CLI, configs and the server share a single vocabulary:

    path/to/folder   a folder dataset (metadata.jsonl or sidecar .txt captions)
    emoji            the emoji dataset, built once into ~/.cache/blinkgen/datasets/emoji
    shapes:N         N procedural shapes images (generated, nothing on disk)
    A+B              the concatenation of A and B (any of the above)
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from blinkgen.data.types import ImageCaptionSet
from blinkgen.errors import UserInputError

SPEC_FORMS = "a folder path, 'emoji', 'shapes:N' (N > 0), or a mix 'A+B' of these"
_SHAPES = re.compile(r"^shapes:(\d+)$")


def default_emoji_dir() -> Path:
    return Path.home() / ".cache" / "blinkgen" / "datasets" / "emoji"


def _load_one(part: str, size: int, seed: int) -> ImageCaptionSet:
    from blinkgen.data.folder import load_folder  # lazy: keep `import blinkgen` light

    if part == "emoji":
        from blinkgen.data.emoji import build_emoji

        return load_folder(build_emoji(default_emoji_dir()), size)
    m = _SHAPES.match(part)
    if m:
        n = int(m.group(1))
        if n < 1:
            raise UserInputError(f"dataset {part!r}: N must be at least 1")
        from blinkgen.data.shapes import make_shapes  # another engineer's module, loaded on use

        return make_shapes(n=n, seed=seed, size=size)
    if part.startswith("shapes"):
        raise UserInputError(f"dataset {part!r}: write shapes:N with N a positive integer, e.g. shapes:2000")
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
    seed + k, so 'shapes:500+shapes:500' is 1000 different images, not one set twice."""
    if not isinstance(spec, str) or not spec.strip():
        raise UserInputError(f"empty dataset spec; a dataset is {SPEC_FORMS}")
    spec = spec.strip()
    parts = _split_spec(spec)
    if any(not p for p in parts):
        raise UserInputError(f"dataset {spec!r} has an empty part; a dataset is {SPEC_FORMS}")
    sets, k = [], 0
    for part in parts:
        sets.append(_load_one(part, size, seed + k))
        k += part.startswith("shapes:")
    return sets[0] if len(sets) == 1 else ImageCaptionSet.concat(sets)
