"""Load a folder of captioned images into an in-memory `ImageCaptionSet`, and write one back.

Images are the files whose extension is one the shared reader decodes
(`image_io.IMAGE_EXTENSIONS`: PNG, JPEG, WebP, GIF, BMP, TIFF; an animated GIF or WebP gives its
first frame), in the folder and its subfolders; hidden entries (".x", macOS "._x" forks) are left
out. Two caption conventions are read, because they are the ones users already have:
- `metadata.jsonl` (Hugging Face imagefolder): rows with `file_name` (relative, subfolders allowed,
  any extension) and `text`; our own builders add `captions`, a list of extra captions for the
  same image.
- a sidecar `name.txt` beside `name.png` (the fine-tuning tools' convention): EACH non-empty line
  is one caption (several lines = several captions for the image). A line that looks cut off
  mid-caption (ends in ',', ';', ':', '-', '&', ' and', ' with' or ' of') and is followed by
  another is most likely one caption wrapped over two lines, so the loader warns, once per folder,
  naming those files.
Both may be present; an image's captions are then the union (metadata first).
Optional metadata fields: `group` (images of one subject, e.g. an emoji's skin tones and styles,
for balanced sampling) and `style` (the style phrase captions use, e.g. "twemoji").
File names are matched in Unicode NFC form on every side (metadata rows, files on disk, sidecars):
macOS writes "e" + combining accent (NFD) where an editor types "é" (NFC). Names in the dataset
and its report are NFC.

Bad files never stop training: each unusable image is skipped and recorded in the report under a
reason with its file name, so the user can fix their data; so is a .txt caption file that no
image uses (README/LICENSE-like texts aside: NOT_CAPTION_FILES). Only a folder with nothing
usable raises. Images are decoded with Pillow only (never unpickled).
"""
from __future__ import annotations

import json
import logging
import os
import re
import unicodedata
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from blinkgen.data.image_io import (BOMB, IMAGE_EXTENSIONS, MAX_SIDE, TOO_LARGE, UNREADABLE,  # noqa: F401
                                    read_image, to_rgb_square, too_small)
from blinkgen.checks import as_int
from blinkgen.data.types import ImageCaptionSet, LoadReport
from blinkgen.errors import DataError, ImageReadError, InputFileError
from blinkgen.progress import bar, is_terminal
from blinkgen.textio import BOM, decode_lines, decode_text

log = logging.getLogger(__name__)

METADATA_NAME = "metadata.jsonl"
CAPTION_SUFFIX = ".txt"
# .txt files that are documents, not captions (the emoji build's LICENSES/*.txt, a README.txt):
# never reported as caption files without an image. Matched on the lower-case start of the file's
# name or of a folder it is in.
NOT_CAPTION_FILES = ("readme", "license", "licence", "copying", "notice", "authors", "credits")
# A sidecar line ending like this, with another line after it, is most likely one caption wrapped
# over two lines (each line is a separate caption): worth a warning, never a silent join.
_CONTINUES = re.compile(r"(?:[,;:&-]|\b(?:and|with|of))\s*$", re.IGNORECASE)
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
NO_IMAGE = "caption file without an image"
SAME_NAME = "same name as another file in another Unicode form"

_SPACES = re.compile(r"\s+")


def normalize_caption(text: str) -> str:
    """One canonical spelling per caption, so duplicates collapse and tokenisation is stable:
    underscores become spaces (emoji short names, file-name-style tags), byte-order marks
    (U+FEFF, invisible) are dropped, all whitespace runs (tabs, newlines) become one space, ends
    are stripped. Idempotent; case is kept (it can carry
    meaning: "flag: Japan")."""
    return _SPACES.sub(" ", text.replace("_", " ").replace(BOM, "")).strip()


def _nfc(name: str) -> str:
    """The one spelling a file name is matched and reported in (macOS file names are NFD)."""
    return unicodedata.normalize("NFC", name)


def _unique_captions(texts: list[str]) -> list[str]:
    seen, out = set(), []
    for t in texts:
        c = normalize_caption(t)
        if c and c not in seen:
            seen.add(c)
            out.append(c)
    return out


FAR_FROM_SQUARE = 3.0  # long side / short side at or above which padding leaves the subject a sliver
BLOWN_UP = 4.0  # training size / long side at or above which an image is enlarged into a blur


def _read_image(path: Path, size: int, odd: dict | None = None, key: str | None = None
                ) -> tuple[Image.Image | None, str | None]:
    """Decode one file; returns (image, None) or (None, skip reason). Size is checked from the
    header before any pixel is decoded, so a hostile header costs nothing. odd: {file: (w, h)}
    of images kept but far from square or far below `size` (load_folder warns about them)."""
    try:
        im = read_image(path, min_side=MIN_SIDE)
    except ImageReadError as e:
        return None, e.reason
    w, h = im.size
    if odd is not None and (max(w, h) / min(w, h) >= FAR_FROM_SQUARE or size / max(w, h) >= BLOWN_UP):
        odd[key or path.name] = (w, h)
    return to_rgb_square(im, size), None


def odd_sizes_warning(odd: dict, size: int, root) -> str | None:
    """One warning naming the images padded into a sliver (a 2000x300 banner keeps its caption but
    becomes a band a seventh of the square) or enlarged into a blur (8x8 at 64 px), or None."""
    if not odd:
        return None
    shown = ", ".join(f"{n} ({w}x{h})" for n, (w, h) in list(odd.items())[:5]) + (
        f" and {len(odd) - 5} more" if len(odd) > 5 else "")
    return (f"{root}: {len(odd)} image(s) will train poorly at {size}x{size}: {shown}; an image is padded to a "
            f"square (a side {FAR_FROM_SQUARE:g}x the other leaves its subject a thin band) and resized (one "
            f"{BLOWN_UP:g}x smaller than the training size is enlarged into a blur): crop or redraw them")


def _read_metadata(root: Path, report: LoadReport, tags: dict | None = None) -> tuple[dict[str, list[str] | None], int]:
    """metadata.jsonl -> {relative posix file name, NFC: captions (None when the row has none)}.
    `tags`, when given, receives {file name: {"group": str, "style": str}} for rows that set them.
    Bad rows and unsafe paths are recorded in `report`; DataError when the file cannot be read."""
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
        key = _nfc(rel.as_posix())
        out[key] = texts if texts else None
        if tags is not None:
            t = {k: normalize_caption(row[k]) for k in ("group", "style") if isinstance(row.get(k), str)}
            if t:
                tags[key] = t
    return out, n_rows


def _read_sidecar(txt: Path) -> list[str] | None:
    """The non-empty lines of a sidecar caption file, each one caption, or None when it cannot be
    read. Byte-order marks and CRLF are fine; InputFileError when the file is not UTF-8 (or
    BOM-marked UTF-16) text."""
    try:
        data = txt.read_bytes()
    except OSError:
        return None
    return [ln for ln in decode_text(data, txt.name).split("\n") if ln.strip()]


def looks_wrapped(lines: list[str]) -> bool:
    """Whether a caption line other than the last ends as if it continued on the next line
    (',', ';', ':', '-', '&', ' and', ' with', ' of'): one caption wrapped over two lines, which
    the sidecar convention reads as two captions."""
    return any(_CONTINUES.search(ln) for ln in lines[:-1])


def _list_files(root: Path) -> list[str]:
    """Every file under `root` as a relative posix name as spelled on disk, sorted. Hidden
    entries are left out: macOS "._x.png" forks and editor checkpoints are not pictures."""
    rels = (p.relative_to(root) for p in root.rglob("*"))
    return sorted(r.as_posix() for r in rels
                  if not any(part.startswith(".") for part in r.parts) and (root / r).is_file())


def _names_list(names: list[str], limit: int = 5) -> str:
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _scan(root: Path, tags: dict | None) -> tuple[list[tuple[str, str, list[str] | None]], LoadReport, str]:
    """scan_folder's work; items are (NFC name, name as spelled on disk, raw captions or None)."""
    if not root.is_dir():
        raise DataError(f"dataset folder {str(root)!r} does not exist or is not a folder")
    report = LoadReport()
    meta, n_rows = _read_metadata(root, report, tags)
    on_disk = _list_files(root)
    by_key: dict[str, str] = {}  # NFC name -> on-disk name (two spellings of one name: the first)
    for name in on_disk:
        by_key.setdefault(_nfc(name), name)

    def disk_name(key: str) -> str | None:  # a listed hidden file is still used, as before
        return by_key.get(key) or (key if (root / key).is_file() else None)

    images: dict[str, str] = {}  # NFC name -> on-disk name
    for name in on_disk:
        if Path(name).suffix.lower() in IMAGE_EXTENSIONS:
            if _nfc(name) in images:  # only a file system that keeps both spellings (Linux)
                report.skip(SAME_NAME, name)
            else:
                images[_nfc(name)] = name
    for key in sorted(meta):  # listed files: any extension
        if key not in images:
            found_as = disk_name(key)
            if found_as is None:
                report.skip(MISSING_FILE, key)
            else:
                images[key] = found_as
    items, used_txt, wrapped = [], set(), []
    for key in sorted(images):
        texts = meta.get(key)
        txt_key = Path(key).with_suffix(CAPTION_SUFFIX).as_posix()
        txt = disk_name(txt_key)
        side = None
        if txt is not None:
            used_txt.add(txt)
            try:
                side = _read_sidecar(root / txt)
            except InputFileError:
                report.skip(NOT_TEXT, txt_key)
                continue
            if side and looks_wrapped(side):
                wrapped.append(txt_key)
        items.append((key, images[key], None if texts is None and side is None else (texts or []) + (side or [])))
    # A caption file that no image uses: its image is missing, misnamed, or in a format the reader
    # does not take (a.svg or a.heic + a.txt). Documents (NOT_CAPTION_FILES) are not captions.
    for name in on_disk:
        p = Path(name)
        if p.suffix.lower() == CAPTION_SUFFIX and name not in used_txt \
                and not any(part.lower().startswith(NOT_CAPTION_FILES) for part in p.parts):
            report.skip(NO_IMAGE, _nfc(name))
    if wrapped:
        log.warning("%s: each line of a caption file is a separate caption, but in %s a line ends as if "
                    "its caption went on (',' ';' ':' '-' '&' 'and' 'with' 'of'): put a caption that "
                    "wraps on one line", root, _names_list(wrapped))
    n_images = sum(1 for n in on_disk if Path(n).suffix.lower() in IMAGE_EXTENSIONS)
    found = (f"found {n_images} image files ({'/'.join(IMAGE_EXTENSIONS)})"
             + (f" and {n_rows} rows in {METADATA_NAME}" if (root / METADATA_NAME).exists() else
                f" and no {METADATA_NAME}"))
    return items, report, found


def scan_folder(path: str | os.PathLike, tags: dict | None = None) -> tuple[list[tuple[str, list[str] | None]], LoadReport, str]:
    """List (relative posix file name in NFC, raw captions or None) for every candidate image
    (see the module doc), sorted by name, without decoding pixels. Also returns the report so far
    (missing files, bad metadata rows, caption files that are not text or have no image) and a
    one-line description of what was found (for error messages). Logs one warning naming the
    caption files whose lines look like one wrapped caption. `tags`: as `_read_metadata`.
    Raises DataError when `path` is not a folder or metadata.jsonl cannot be read."""
    items, report, found = _scan(Path(path), tags)
    return [(name, raw) for name, _, raw in items], report, found


def load_folder(path: str | os.PathLike, size: int, progress: bool | None = None,
                log_summary: bool = True) -> ImageCaptionSet:
    """Load every usable captioned image under `path` (see the module doc for what is read) as
    size x size RGB; `result.names` are NFC relative posix file names.

    Unusable images are skipped and recorded in `result.report` (reason -> file names). The
    summary is logged (a warning when anything was skipped) unless `log_summary` is False, for
    callers that print the report themselves. Raises DataError when `path` is not a folder or
    nothing is usable, saying what was found."""
    size = as_int(size, "size", 1)
    root = Path(path)
    tags: dict[str, dict] = {}
    items, report, found = _scan(root, tags)
    images = torch.empty((len(items), 3, size, size), dtype=torch.uint8)
    captions: list[list[str]] = []
    names: list[str] = []
    show = is_terminal() if progress is None else progress  # None: only on a terminal
    odd: dict[str, tuple[int, int]] = {}
    for name, on_disk, raw in bar(items, desc=f"loading {root.name}", unit="img", leave=False, enabled=show):
        if raw is None:
            report.skip(NO_CAPTION, name)
            continue
        caps = _unique_captions(raw)
        if not caps:
            report.skip(EMPTY_CAPTION, name)
            continue
        im, reason = _read_image(root / on_disk, size, odd, name)
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
    if log_summary:
        (log.warning if report.n_skipped else log.info)("%s: %s", root, report.summary())
    warning = odd_sizes_warning(odd, size, root)
    if warning:
        log.warning(warning)
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
