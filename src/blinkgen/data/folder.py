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
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from tqdm import tqdm

from blinkgen.data.types import ImageCaptionSet, LoadReport
from blinkgen.errors import DataError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")
METADATA_NAME = "metadata.jsonl"
# Below 8 px there is no picture left to learn from; above 8192 px per side a file is almost
# certainly a scan or a hostile header, and decoding it would cost ~200 MB per image.
MIN_SIDE, MAX_SIDE = 8, 8192
WHITE = (255, 255, 255)

# Skip reasons (stable strings: users grep for them, tests check them).
UNREADABLE = "unreadable or corrupt image"
NO_CAPTION = "no caption"
EMPTY_CAPTION = "empty caption"
TOO_SMALL = f"too small (< {MIN_SIDE} px)"
TOO_LARGE = f"too large (> {MAX_SIDE} px)"
BOMB = "decompression bomb"
MISSING_FILE = "listed in metadata.jsonl but missing"
BAD_ROW = "bad metadata.jsonl row"
UNSAFE_PATH = "file_name outside the folder"

_SPACES = re.compile(r"\s+")


def normalize_caption(text: str) -> str:
    """One canonical spelling per caption, so duplicates collapse and tokenisation is stable:
    underscores become spaces (emoji short names, file-name-style tags), all whitespace runs
    (tabs, newlines) become one space, ends are stripped. Idempotent; case is kept (it can carry
    meaning: "flag: Japan")."""
    return _SPACES.sub(" ", text.replace("_", " ")).strip()


def _unique_captions(texts: list[str]) -> list[str]:
    seen, out = set(), []
    for t in texts:
        c = normalize_caption(t)
        if c and c not in seen:
            seen.add(c)
            out.append(c)
    return out


def to_rgb_square(im: Image.Image, size: int) -> Image.Image:
    """Any Pillow image -> size x size RGB. Transparency is composited on white (icons and emoji
    are drawn for a light background; black would invent dark halos); non-square images are
    centre-padded on white so nothing is cropped or stretched, then resized with LANCZOS."""
    if im.mode in ("I", "I;16", "I;16B", "I;16L", "F"):  # 16-bit / float greyscale: rescale to 8 bit
        a = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode != "F" and a.max() > 255 else max(float(a.max()), 1.0)
        im = Image.fromarray(np.clip(a / top * 255.0, 0, 255).astype(np.uint8), "L")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info:
        rgba = im.convert("RGBA")
        im = Image.new("RGB", rgba.size, WHITE)
        im.paste(rgba, mask=rgba.getchannel("A"))
    elif im.mode != "RGB":
        im = im.convert("RGB")  # L, P, CMYK, YCbCr, 1
    w, h = im.size
    if w != h:
        side = max(w, h)
        canvas = Image.new("RGB", (side, side), WHITE)
        canvas.paste(im, ((side - w) // 2, (side - h) // 2))
        im = canvas
    if im.size != (size, size):
        im = im.resize((size, size), Image.Resampling.LANCZOS)
    return im


def _read_image(path: Path, size: int) -> tuple[Image.Image | None, str | None]:
    """Decode one file; returns (image, None) or (None, skip reason). Size is checked from the
    header before any pixel is decoded, so a hostile header costs nothing."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
                if min(w, h) < MIN_SIDE:
                    return None, TOO_SMALL
                if max(w, h) > MAX_SIDE:
                    return None, TOO_LARGE
                im.seek(0)  # animated GIF/WebP: the first frame
                im.load()
                im = ImageOps.exif_transpose(im)  # phone photos store rotation in EXIF
                return to_rgb_square(im, size), None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        return None, BOMB
    except (OSError, ValueError, SyntaxError, EOFError, Image.UnidentifiedImageError):
        return None, UNREADABLE


def _read_metadata(root: Path, report: LoadReport, tags: dict | None = None) -> tuple[dict[str, list[str] | None], int]:
    """metadata.jsonl -> {relative posix file name: captions (None when the row has none)}.
    `tags`, when given, receives {file name: {"group": str, "style": str}} for rows that set them."""
    out: dict[str, list[str] | None] = {}
    path = root / METADATA_NAME
    if not path.is_file():
        return out, 0
    n_rows = 0
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            n_rows += 1
            try:
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
    """Captions from name.txt beside name.png, or None when there is no sidecar."""
    txt = image_path.with_suffix(".txt")
    if not txt.is_file():
        return None
    try:
        return [ln for ln in txt.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
    except OSError:
        return None


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
        side = _read_sidecar(root / name)
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
    if not (isinstance(size, int) and size >= 1):
        raise DataError(f"image size must be a positive integer, got {size!r}")
    root = Path(path)
    tags: dict[str, dict] = {}
    items, report, found = scan_folder(root, tags)
    images = torch.empty((len(items), 3, size, size), dtype=torch.uint8)
    captions: list[list[str]] = []
    names: list[str] = []
    for name, raw in tqdm(items, desc=f"loading {root.name}", unit="img", leave=False,
                          disable=None if progress is None else not progress):  # None: only on a tty
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
