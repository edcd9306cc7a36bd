"""Files blinkgen writes where the user told it to: names that do not collide, and no silent
overwrite.

Two rules, used by every command that writes a user-named output (generate, eval, bench, the
data builders):
1. A generated image's default name says what made it: `{slug}-{seed}-{tag}.png`, where the slug
   is the prompt's ASCII words (a prompt with none, such as "红色的心" or "🍎", gets "image") and
   the tag is a short hash of the full prompt and settings (model, steps, guidance, sampler). So
   distinct (prompt, seed, settings) get distinct names, and the same ones the same name.
2. An existing file is never replaced silently: the command checks all its targets before it
   starts (a refusal costs nothing) and refuses with OutputExistsError naming `--overwrite`;
   the write itself is exclusive (a file that appears meanwhile is not clobbered either) and
   goes through a temp file (a crash never leaves half an image).
Folders (models, adapters, dataset builds) are written the same way: into a temp folder that
replaces the old one only when complete (`replacing_folder`).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import OutputExistsError

SLUG_CHARS = 40
TAG_HEX = 8  # 32 bits: a collision needs ~65k settings for one (prompt, seed) at even odds
_NOT_SLUG = re.compile(r"[^a-z0-9]+")


def slug(text: str) -> str:
    """The ASCII letters and digits of `text`, lower case, runs of anything else as "-", at most
    SLUG_CHARS; "image" when nothing is left (non-Latin scripts, emoji)."""
    return _NOT_SLUG.sub("-", text.lower()).strip("-")[:SLUG_CHARS].strip("-") or "image"


def settings_tag(parameters: dict) -> str:
    """A short stable hash of everything that makes an image other than its seed."""
    rest = {k: v for k, v in parameters.items() if k not in ("seed", "seeds")}
    blob = json.dumps(rest, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:TAG_HEX]


def image_name(parameters: dict, seed: int, kind: str = "") -> str:
    """`{slug}-{seed}-{tag}{-kind}.png` for an image made with `parameters` (which hold the prompt)."""
    return f"{slug(str(parameters.get('prompt', '')))}-{seed}-{settings_tag(parameters)}" + (f"-{kind}" if kind else "") + ".png"


def check_png_names(paths) -> None:
    """Refuse, before any work, an image output not named .png: blinkgen writes PNG (its settings
    ride in the PNG's `parameters` chunk), and PNG bytes under 'x.jpg' mislead every viewer. A
    name without a suffix, or an existing folder, is most likely meant as a folder: say --outdir."""
    from .errors import UserInputError

    for p in map(Path, paths):
        if p.suffix.lower() != ".png":
            if p.suffix == "" or p.is_dir():
                raise UserInputError(f"{p}: -o names one .png file; to write into a folder use --outdir {p}")
            raise UserInputError(f"{p}: blinkgen writes PNG images (their settings ride in the PNG); name the "
                                 "output .png and convert afterwards if you need another format")


def check_folder(path, what: str = "output folder") -> None:
    """Refuse, before any work, a folder path that a file blocks: `path` itself, or the nearest of
    its ancestors that exists (a file there would make mkdir raise FileExistsError). A path that
    does not exist yet is fine: it is created when written. UserInputError names the file."""
    from .errors import UserInputError

    p = Path(path)
    for q in (p, *p.parents):
        if q.is_dir():
            return
        if q.exists() or q.is_symlink():
            where = f"; the {what} must be a folder" if q == p else f", so the {what} {p} cannot be made inside it"
            raise UserInputError(f"{q} is a file, not a folder{where}")


def check_new(paths, overwrite: bool = False, flag: str = "--overwrite") -> None:
    """Refuse, before any work, when one of `paths` exists and overwrite is False, is a folder, or
    lies under a file (check_folder)."""
    from .errors import UserInputError

    for p in map(Path, paths):
        check_folder(p.parent, f"folder of {p.name}")
        if p.is_dir():
            raise UserInputError(f"{p} is a folder, not a file; name a file inside it")
    if overwrite:
        return
    for p in map(Path, paths):
        if p.exists() or p.is_symlink():
            raise OutputExistsError(f"{p} already exists; pass {flag} to replace it, or choose another output")


def parse_args_with_out(ap, argv=None):
    """For a script whose argparse parser `ap` has an `--out FILE` argument (the bench scripts):
    add `--overwrite` as its last option, parse `argv` (None: sys.argv), and when --out is given
    (non-empty) refuse an existing file before the script does any work, not after. Returns the
    parsed namespace. Raises SystemExit(2) through ap.error, with check_new's one-line message
    naming --overwrite, when --out exists and --overwrite is not given (and SystemExit for a
    bad command line, as parse_args does); UserInputError from check_new when --out is a folder
    or lies under a file."""
    ap.add_argument("--overwrite", action="store_true", help="replace an existing --out file (else refused)")
    args = ap.parse_args(argv)
    if args.out:
        try:
            check_new([args.out], args.overwrite)
        except OutputExistsError as e:
            ap.error(str(e))
    return args


def write_bytes(path, data: bytes, overwrite: bool = False, flag: str = "--overwrite") -> Path:
    """Write `data` to `path` through a temp file, so a crash never leaves half a file. Without
    overwrite the file must not exist (a hard link creates it atomically or fails); with it, the
    old file is replaced atomically (rename)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        if overwrite:
            os.replace(tmp, path)
            return path
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise OutputExistsError(f"{path} already exists; pass {flag} to replace it, or choose another output") from None
        except OSError:  # no hard links on this file system (FAT, some shares): exclusive create
            try:
                with open(path, "xb") as f:
                    f.write(data)
            except FileExistsError:
                raise OutputExistsError(f"{path} already exists; pass {flag} to replace it, or choose another output") from None
        return path
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path, text: str, overwrite: bool = False, flag: str = "--overwrite") -> Path:
    """write_bytes of UTF-8 text."""
    return write_bytes(path, text.encode("utf-8"), overwrite, flag)


@contextmanager
def replacing_folder(dest: str | Path) -> Iterator[Path]:
    """`with replacing_folder(dest) as tmp:` write the folder's files into `tmp`, an empty temp
    folder beside `dest` (`.<name>.<8 hex>.tmp`, same file system; dest's parent is created).

    On a clean exit the new folder is swapped into place by renames: the old `dest`, if any, is
    moved aside to `.<name>.<8 hex>.old`, `tmp` is renamed to `dest`, then the old one is deleted.
    Each rename is atomic, so a reader of `dest` sees the old folder or the new one complete
    (or, between the two renames, none), never a half-written folder; if the second rename
    fails, the old folder is renamed back.

    On any exception (BaseException: also KeyboardInterrupt) in the block or in the swap, the
    temp folder is deleted and the exception re-raised unchanged; an exception in the block
    leaves the old `dest` untouched. Raises whatever the block raises, and OSError when the temp
    folder cannot be created or a rename fails."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.mkdir()
    try:
        yield tmp
        old = None
        if dest.exists():
            old = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.old")
            os.replace(dest, old)
        try:
            os.replace(tmp, dest)
        except BaseException:
            if old is not None:  # put the old folder back: a failed swap loses nothing
                os.replace(old, dest)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
