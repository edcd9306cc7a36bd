"""Load a folder of captioned images into an in-memory `ImageCaptionSet`, and write one back.

Two caption conventions are read, because they are the ones users already have:
- `metadata.jsonl` (Hugging Face imagefolder): rows with `file_name` (relative, subfolders allowed)
  and `text`; our own builders add `captions`, a list of extra captions for the same image.
- a sidecar `name.txt` beside `name.png` (the fine-tuning tools' convention): one caption per
  non-empty line.
Both may be present; an image's captions are then the union (metadata first).
Optional metadata fields: `group` (images of one subject, e.g. an emoji's skin tones and styles,
for balanced sampling) and `style` (the style phrase captions use, e.g. "twemoji").

Bad files never stop training: each unusable image is skipped and recorded in the report under a
reason with its file name, so the user can fix their data. Only a folder with nothing usable
raises. Images are decoded with Pillow only (never unpickled).
"""
from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from blinkgen.data.image_io import BOMB, MAX_SIDE, TOO_LARGE, UNREADABLE, read_image, to_rgb_square, too_small  # noqa: F401
from blinkgen.checks import as_int
from blinkgen.data.types import ImageCaptionSet, LoadReport
from blinkgen.errors import DataError, ImageReadError, InputFileError
from blinkgen.progress import bar, is_terminal
from blinkgen.textio import BOM, decode_lines, decode_text

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")
METADATA_NAME = "metadata.jsonl"
# Below 8 px there is no picture left to learn from. Images are read by the one shared reader
# (data/image_io.py: modes, bit depths, EXIF, transparency, size and decompression-bomb limits).
MIN_SIDE = 8

# Skip reasons (stable strings: users grep for them, tests check them). The image reasons
# (UNREADABLE, TOO_LARGE, BOMB, ...) are the shared reader's.
NO_CAPTION = "no caption"
EMPTY_CAPTION = "empty caption"
TOO_SMALL = too_small(MIN_SIDE)
NOT_TEXT = "caption file is not UTF-8 text"
MISSING_FILE = "listed in metadata.jsonl but missing"
BAD_ROW = "bad metadata.jsonl row"
UNSAFE_PATH = "file_name outside the folder"

_SPACES = re.compile(r"\s+")


def normalize_caption(text: str) -> str:
    """One canonical spelling per caption, so duplicates collapse and tokenisation is stable:
    underscores become spaces (emoji short names, file-name-style tags), byte-order marks
    (U+FEFF, invisible) are dropped, all whitespace runs (tabs, newlines) become one space, ends
    are stripped. Idempotent; case is kept (it can carry
    meaning: "flag: Japan")."""
    return _SPACES.sub(" ", text.replace("_", " ").replace(BOM, "")).strip()


def _unique_captions(texts: list[str]) -> list[str]:
    seen, out = set(), []
    for t in texts:
        c = normalize_caption(t)
        if c and c not in seen:
            seen.add(c)
            out.append(c)
    return out


def _read_image(path: Path, size: int) -> tuple[Image.Image | None, str | None]:
    """Decode one file; returns (image, None) or (None, skip reason). Size is checked from the
    header before any pixel is decoded, so a hostile header costs nothing."""
    try:
        return to_rgb_square(read_image(path, min_side=MIN_SIDE), size), None
    except ImageReadError as e:
        return None, e.reason


def _read_metadata(root: Path, report: LoadReport, tags: dict | None = None) -> tuple[dict[str, list[str] | None], int]:
    """metadata.jsonl -> {relative posix file name: captions (None when the row has none)}.
    `tags`, when given, receives {file name: {"group": str, "style": str}} for rows that set them."""
    out: dict[str, list[str] | None] = {}
    path = root / METADATA_NAME
    if not path.is_file():
        return out, 0
    n_rows = 0
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or e}") from None
    # A Windows editor's byte-order mark and CRLF line ends are fine (blinkgen.textio); a line
    # that is not UTF-8 is one bad row, not a broken file.
    for lineno, line in enumerate(decode_lines(data), 1):
        if line is not None and not line.strip():
            continue
        n_rows += 1
        try:
            if line is None:
                raise TypeError
            row = json.loads(line)
            name = row["file_name"]
            text = row.get("text")
            extra = row.get("captions") or []
            if not isinstance(name, str) or not isinstance(extra, list) or \
                    not all(isinstance(t, str) for t in [*extra, *([text] if text is not None else [])]):
                raise TypeError
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
            report.skip(BAD_ROW, f"{METADATA_NAME}:{lineno}")
            continue
        rel = Path(name)
        if rel.is_absolute() or ".." in rel.parts:
            report.skip(UNSAFE_PATH, name)
            continue
        texts = ([text] if text is not None else []) + extra
        out[rel.as_posix()] = texts if texts else None
        if tags is not None:
            t = {k: normalize_caption(row[k]) for k in ("group", "style") if isinstance(row.get(k), str)}
            if t:
                tags[rel.as_posix()] = t
    return out, n_rows


def _read_sidecar(image_path: Path) -> list[str] | None:
    """Captions from name.txt beside name.png, or None when there is no sidecar. Byte-order marks
    and CRLF are fine; InputFileError when the file is not UTF-8 (or BOM-marked UTF-16) text."""
    txt = image_path.with_suffix(".txt")
    if not txt.is_file():
        return None
    try:
        data = txt.read_bytes()
    except OSError:
        return None
    return [ln for ln in decode_text(data, txt.name).split("\n") if ln.strip()]


def scan_folder(path: str | os.PathLike, tags: dict | None = None) -> tuple[list[tuple[str, list[str] | None]], LoadReport, str]:
    """List (relative file name, raw captions or None) for every candidate image, without
    decoding pixels. Also returns the report so far and a one-line description of what was found
    (for error messages)."""
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"dataset folder {str(root)!r} does not exist or is not a folder")
    report = LoadReport()
    meta, n_rows = _read_metadata(root, report, tags)
    # Hidden entries are skipped: macOS "._x.png" forks and editor checkpoints are not pictures.
    rels = (p.relative_to(root) for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
    on_disk = sorted(r.as_posix() for r in rels
                     if not any(part.startswith(".") for part in r.parts) and (root / r).is_file())
    disk = set(on_disk) | {n for n in meta if (root / n).is_file()}  # listed files: any extension
    items = []
    for name in sorted(disk | set(meta)):
        if name not in disk:
            report.skip(MISSING_FILE, name)
            continue
        texts = meta.get(name)
        try:
            side = _read_sidecar(root / name)
        except InputFileError:
            report.skip(NOT_TEXT, Path(name).with_suffix(".txt").as_posix())
            continue
        if texts is None and side is None:
            items.append((name, None))
        else:
            items.append((name, (texts or []) + (side or [])))
    found = (f"found {len(on_disk)} image files ({'/'.join(IMAGE_EXTENSIONS)})"
             + (f" and {n_rows} rows in {METADATA_NAME}" if (root / METADATA_NAME).exists() else
                f" and no {METADATA_NAME}"))
    return items, report, found


def load_folder(path: str | os.PathLike, size: int, progress: bool | None = None) -> ImageCaptionSet:
    """Load every usable captioned image under `path` as size x size RGB.

    Unusable images are skipped and recorded in `result.report` (reason -> file names); the
    summary is logged. Raises DataError when nothing is usable, saying what was found."""
    size = as_int(size, "size", 1)
    root = Path(path)
    tags: dict[str, dict] = {}
    items, report, found = scan_folder(root, tags)
    images = torch.empty((len(items), 3, size, size), dtype=torch.uint8)
    captions: list[list[str]] = []
    names: list[str] = []
    show = is_terminal() if progress is None else progress  # None: only on a terminal
    for name, raw in bar(items, desc=f"loading {root.name}", unit="img", leave=False, enabled=show):
        if raw is None:
            report.skip(NO_CAPTION, name)
            continue
        caps = _unique_captions(raw)
        if not caps:
            report.skip(EMPTY_CAPTION, name)
            continue
        im, reason = _read_image(root / name, size)
        if im is None:
            report.skip(reason, name)
            continue
        images[len(names)] = torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()).permute(2, 0, 1)
        captions.append(caps)
        names.append(name)
    report.loaded = len(names)
    if not names:
        raise DataError(f"no usable captioned images in {str(root)!r}: {found}; "
                        + report.summary().replace("\n", ";"))
    (log.warning if report.n_skipped else log.info)("%s: %s", root, report.summary())
    groups = [tags.get(n, {}).get("group", "") for n in names] if tags else None
    styles = [tags.get(n, {}).get("style", "") for n in names] if tags else None
    return ImageCaptionSet(images[: len(names)].clone(), captions, names, report, groups, styles)


def _write_jsonl_atomic(rows: list[dict], path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def save_folder(ds: ImageCaptionSet, out_dir: str | os.PathLike, prefix: str = "",
                extra: list[dict] | None = None) -> Path:
    """Write `ds` as a folder dataset that `load_folder` reads back exactly: PNGs named
    `{prefix}{i:05d}.png` and metadata.jsonl (`text` = first caption, `captions` = all, plus any
    `extra[i]` fields). metadata.jsonl is written last and atomically, so a half-written folder is
    never mistaken for a finished one."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(len(ds)):
        name = f"{prefix}{i:05d}.png"
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(ds.images[i].permute(1, 2, 0).numpy(), "RGB").save(out / name)
        tags = {k: v[i] for k, v in (("group", ds.groups), ("style", ds.styles)) if v is not None and v[i]}
        rows.append({"file_name": name, "text": ds.captions[i][0], "captions": ds.captions[i],
                     **tags, **(extra[i] if extra else {})})
    _write_jsonl_atomic(rows, out / METADATA_NAME)
    return out
