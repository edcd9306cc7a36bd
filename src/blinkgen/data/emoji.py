"""Build the emoji dataset: ~3.8k 64x64 images per style, each with several captions.

Why emoji: thousands of clean, centred, licence-clear icons with rich names (CLDR, short names,
categories) are the best small text-to-image set there is for a laptop-sized model.

Source: the npm packages emoji-datasource-<style> (iamcal/emoji-data), fetched with the ordinary
client (`npm pack`), pinned by version AND by sha512, checked again against the registry, and
cached so a second build never fetches. The tarball is read as a stream, never extracted, so a
hostile archive cannot write outside the cache. Fallback when npm is missing: the Noto Color
Emoji font renders the google style. The output is a folder dataset (`load_folder` reads it) with
licence and attribution files beside the images.
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import tarfile
from importlib import resources
from pathlib import Path

import emoji as emoji_lib
from PIL import Image, ImageDraw, ImageFont

from blinkgen.data.npm import PACKAGES, NpmPackage, default_cache_dir, fetch_tarball, sri_sha512, verify_tarball  # noqa: F401
from blinkgen.data.folder import METADATA_NAME, _write_jsonl_atomic, normalize_caption
from blinkgen.data.image_io import read_image, to_rgb_square
from blinkgen.errors import DataError, ImageReadError, OutputExistsError, UserInputError
from blinkgen.outputs import replacing_folder
from blinkgen.progress import bar

log = logging.getLogger(__name__)


STYLE_NAMES = {"google": "noto emoji", "twitter": "twemoji"}  # how a caption names the style
LICENSE_FILES = {"google": ["Apache-2.0.txt"], "twitter": ["CC-BY-4.0.txt"]}
ATTRIBUTION = {
    "google": "google/: Noto Emoji graphics, Copyright Google Inc., Apache License 2.0 "
              "(https://github.com/googlefonts/noto-emoji); see LICENSES/Apache-2.0.txt",
    "twitter": "twitter/: Twemoji graphics, Copyright Twitter, Inc and other contributors, CC-BY 4.0 "
               "(https://github.com/twitter/twemoji, now https://github.com/jdecked/twemoji); "
               "see LICENSES/CC-BY-4.0.txt",
    "npm": "Emoji metadata and image packaging: emoji-datasource by Cal Henderson (iamcal), MIT "
           "(https://github.com/iamcal/emoji-data); see LICENSES/MIT-emoji-datasource.txt",
}
IMAGE_SIZE = 64  # the packages ship 16/20/32/64 px; 64 is the largest single-image size
NOTO_FONT_SIZE = 109  # Noto Color Emoji is a bitmap (CBDT) font: 109 is its only strike
NOTO_FONT_PATHS = ("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf",
                   "/usr/share/fonts/noto/NotoColorEmoji.ttf",
                   "/System/Library/Fonts/NotoColorEmoji.ttf")
BUILD_INFO = "build_info.json"
# 2: rows carry `group` (the base emoji: its skin tones and styles share it) and `style` as the
# caption phrase ("twemoji"; the package key moved to `source`); no per-style caption.
BUILD_FORMAT = 2
SKIN_TONES = {"1F3FB": "light skin tone", "1F3FC": "medium-light skin tone", "1F3FD": "medium skin tone",
              "1F3FE": "medium-dark skin tone", "1F3FF": "dark skin tone"}
_TONE = r"(?:light|medium-light|medium|medium-dark|dark) skin tone"
_TONE_SPLIT = re.compile(rf"^(.*?) ({_TONE}(?: {_TONE})*)(?: (.+))?$")


def parse_styles(styles) -> tuple[str, ...]:
    """'google,twitter' or a sequence -> validated tuple, order kept, duplicates dropped."""
    items = styles.split(",") if isinstance(styles, str) else list(styles)
    out = tuple(dict.fromkeys(s.strip() for s in items if s.strip()))
    bad = [s for s in out if s not in PACKAGES]
    if bad or not out:
        raise UserInputError(f"unknown emoji style(s) {bad or styles!r}; choose from {', '.join(PACKAGES)}")
    return out


def read_tarball(path: Path, style: str) -> tuple[list[dict], dict[str, bytes], bytes]:
    """One streaming pass over the .tgz (random access into gzip is slow): emoji.json, the
    64 px images of `style` keyed by file name, and the package's own LICENSE."""
    prefix = f"package/img/{style}/{IMAGE_SIZE}/"
    meta, licence, images = None, b"", {}
    try:
        with tarfile.open(path, "r:gz") as tar:
            for m in tar:
                if not m.isfile():
                    continue
                if m.name == "package/emoji.json":
                    meta = json.loads(tar.extractfile(m).read())
                elif m.name == "package/LICENSE":
                    licence = tar.extractfile(m).read()
                elif m.name.startswith(prefix) and "/" not in m.name[len(prefix):]:
                    images[m.name[len(prefix):]] = tar.extractfile(m).read()
    except (tarfile.TarError, OSError, EOFError, json.JSONDecodeError) as e:
        raise DataError(f"cannot read {path}: {e}") from None
    if not isinstance(meta, list):
        raise DataError(f"{path} has no package/emoji.json list; is it an emoji-datasource package?")
    return meta, images, licence


# ---------------------------------------------------------------- captions
def unified_to_char(unified: str) -> str:
    return "".join(chr(int(cp, 16)) for cp in unified.split("-"))


def tone_phrase(key: str) -> str:
    """'1F3FB-1F3FC' -> 'light skin tone, medium-light skin tone' (a repeated tone once)."""
    return ", ".join(dict.fromkeys(SKIN_TONES[k] for k in key.upper().split("-") if k in SKIN_TONES))


def cldr_name(unified: str, subcategory: str = "") -> str | None:
    """The CLDR short name from the `emoji` package, with CLDR's punctuation restored (the package
    stores ':waving_hand_medium_skin_tone:'; CLDR says 'waving hand: medium skin tone')."""
    ch = unified_to_char(unified)
    data = (emoji_lib.EMOJI_DATA.get(ch) or emoji_lib.EMOJI_DATA.get(ch.replace("\ufe0f", ""))
            or emoji_lib.EMOJI_DATA.get(ch + "\ufe0f"))
    if not data:
        return None
    name = normalize_caption(data["en"].strip(":"))
    regional = len(ch) == 2 and all(0x1F1E6 <= ord(c) <= 0x1F1FF for c in ch)  # country flags
    tagged = ch[:1] == "\U0001F3F4" and len(ch) > 2 and all(0xE0020 <= ord(c) <= 0xE007F for c in ch[1:])
    if subcategory in ("country-flag", "subdivision-flag") or regional or tagged:
        return f"flag: {name}"
    if name.startswith("keycap "):
        return "keycap: " + name[len("keycap "):]
    m = _TONE_SPLIT.match(name)
    if m and m.group(1):
        tones = ", ".join(dict.fromkeys(re.findall(_TONE, m.group(2))))
        return f"{m.group(1)}: {tones}" + (f", {m.group(3)}" if m.group(3) else "")
    return name


def _letters(s: str) -> str:
    return "".join(c for c in s.lower() if c.isalnum())


def captions_for(entry: dict, style: str, variant_key: str | None = None) -> list[str]:
    """All captions for one image, primary (CLDR name, else emoji.json name) first, deduplicated:
    CLDR name, lowercase emoji.json name, short names, '<name> emoji', a category phrase
    ('red heart, a heart emoji in smileys & emotion'); the style goes in the row's `style` field."""
    sub, cat = entry.get("subcategory") or "", (entry.get("category") or "").lower()
    unified = entry["skin_variations"][variant_key]["unified"] if variant_key else entry["unified"]
    tones = tone_phrase(variant_key) if variant_key else ""
    with_tone = (lambda s: f"{s}: {tones}") if tones else (lambda s: s)
    plain = [with_tone(normalize_caption(entry.get("name") or "").lower())]
    plain += [with_tone(normalize_caption(s)) for s in entry.get("short_names") or []]
    primary = cldr_name(unified, sub) or plain[0]
    if ":" not in primary and ":" in plain[0] and _letters(primary) == _letters(plain[0]):
        primary = plain[0]  # emoji.json kept CLDR's punctuation ('man: red hair') where `emoji` lost it
    phrase = normalize_caption(sub.replace("-", " "))
    article = "an" if phrase[:1] in tuple("aeiou") else "a"
    caps = [primary, *plain, f"{primary} emoji"]
    if phrase and cat:
        caps.append(f"{primary}, {article} {phrase} emoji in {cat}")
    # No "<name> in twemoji style" caption here: the row's `style` field carries the style, and
    # training appends " in <style> style" to most draws of ANY caption (train/captions.py).
    return [c for c in dict.fromkeys(normalize_caption(c) for c in caps) if c and c.strip(":")]


def iter_images(meta: list[dict], style: str):
    """(entry, variant_key or None, image file name) for every image the package says it has."""
    for entry in sorted(meta, key=lambda e: (e.get("sort_order", 0), e.get("unified", ""))):
        if entry.get(f"has_img_{style}"):
            yield entry, None, entry["image"]
        for key, var in sorted((entry.get("skin_variations") or {}).items()):
            if var.get(f"has_img_{style}"):
                yield entry, key, var["image"]


# ---------------------------------------------------------------- building
def _save(im: Image.Image, out: Path, rel: str, size: int = IMAGE_SIZE) -> None:
    (out / rel).parent.mkdir(parents=True, exist_ok=True)
    to_rgb_square(im, size).save(out / rel, optimize=True)


def build_style_from_tarball(tarball: Path, style: str, out: Path) -> tuple[list[dict], bytes]:
    """Write out/<style>/*.png from a verified tarball; returns metadata rows and the LICENSE."""
    meta, images, licence = read_tarball(tarball, style)
    rows, missing = [], []
    for entry, key, image in bar(list(iter_images(meta, style)), desc=f"emoji {style}", unit="img"):
        if image not in images:
            missing.append(image)
            continue
        rel = f"{style}/{image}"
        try:
            _save(read_image(images[image], name=image), out, rel)
        except ImageReadError as e:
            raise DataError(f"{tarball}: {e}") from None
        var = entry["skin_variations"][key] if key else entry
        caps = captions_for(entry, style, key)
        rows.append({"file_name": rel, "text": caps[0], "captions": caps,
                     "style": STYLE_NAMES[style], "source": style, "group": f"emoji:{entry['unified']}",
                     "category": entry.get("category") or "",
                     "subcategory": entry.get("subcategory") or "", "unified": var["unified"]})
    if missing:
        log.warning("%s: %d images listed in emoji.json are not in the tarball (e.g. %s)",
                    tarball.name, len(missing), ", ".join(missing[:3]))
    if not rows:
        raise DataError(f"{tarball} holds no {style} images under package/img/{style}/{IMAGE_SIZE}/")
    return rows, licence


def find_noto_font() -> Path | None:
    """The Noto Color Emoji font, via fontconfig or the usual install paths."""
    if shutil.which("fc-list"):
        r = subprocess.run(["fc-list", ":family=Noto Color Emoji", "file"], capture_output=True, text=True)
        for line in r.stdout.splitlines():
            if line.strip():
                return Path(line.split(":")[0].strip())
    return next((Path(p) for p in NOTO_FONT_PATHS if Path(p).is_file()), None)


def build_google_from_font(font_path: Path, out: Path, size: int = IMAGE_SIZE) -> list[dict]:
    """Render every fully-qualified emoji the font draws as one glyph, saved size x size (the
    136 x 128 bitmap padded square on white and scaled down). No emoji.json here, so captions
    come from CLDR names only and category/subcategory are empty."""
    font = ImageFont.truetype(str(font_path), NOTO_FONT_SIZE)
    side = int(NOTO_FONT_SIZE * 1.25)  # the glyph bitmap is 136 x 128 at this strike

    def render(ch: str) -> Image.Image:
        im = Image.new("RGBA", (side, side), (0, 0, 0, 0))
        ImageDraw.Draw(im).text((side // 2, side // 2), ch, font=font, anchor="mm", embedded_color=True)
        return im

    one_glyph = font.getlength("\U0001F600")
    fq = emoji_lib.STATUS["fully_qualified"]
    rows = []
    for ch, data in bar(sorted(emoji_lib.EMOJI_DATA.items()), desc="emoji google (font)", unit="img"):
        if data.get("status") != fq:
            continue
        # Skip what the font lacks (an empty box) and sequences it did not join into one glyph
        # (without libraqm Pillow lays a flag out as two letters: twice the advance).
        box = font.getbbox(ch)
        if box[3] <= box[1] or font.getlength(ch) > 1.5 * one_glyph:
            continue
        im = render(ch)
        if im.getbbox() is None:
            continue
        unified = "-".join(f"{ord(c):04x}" for c in ch)
        rel = f"google/{unified}.png"
        _save(im, out, rel, size)
        primary = cldr_name(unified.upper()) or normalize_caption(data["en"].strip(":"))
        caps = [primary, *(normalize_caption(a.strip(":")) for a in data.get("alias", [])), f"{primary} emoji"]
        caps = list(dict.fromkeys(caps))
        base = "-".join(c for c in unified.upper().split("-") if c not in SKIN_TONES)  # tones share a group
        rows.append({"file_name": rel, "text": caps[0], "captions": caps,
                     "style": STYLE_NAMES["google"], "source": "google", "group": f"emoji:{base}",
                     "category": "", "subcategory": "", "unified": unified.upper()})
    if not rows:
        raise DataError(f"{font_path} rendered no emoji; is it the Noto Color Emoji font?")
    return rows


def _write_licences(out: Path, styles: list[str], used_npm: bool, npm_licence: bytes, size: int = IMAGE_SIZE) -> None:
    lic = out / "LICENSES"
    lic.mkdir(exist_ok=True)
    names = [n for s in styles for n in LICENSE_FILES[s]] + (["MIT-emoji-datasource.txt"] if used_npm else [])
    src = resources.files("blinkgen.data") / "LICENSES"
    for n in names:
        try:
            (lic / n).write_bytes((src / n).read_bytes())
        except OSError:
            raise DataError(f"licence text {n} is missing from the blinkgen install ({src}); "
                            "reinstall blinkgen") from None
    if npm_licence:
        (lic / "LICENSE-emoji-datasource-package").write_bytes(npm_licence)
    lines = ["Emoji dataset built by blinkgen. The images keep their authors' licences:", ""]
    lines += [f"- {ATTRIBUTION[s]}" for s in styles] + ([f"- {ATTRIBUTION['npm']}"] if used_npm else [])
    lines += ["", f"Changes: images composited on white and saved as {size}x{size} RGB PNG; captions derived "
              "from the emoji names (CLDR via the Python `emoji` package, and emoji-datasource)."]
    (out / "ATTRIBUTION.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def _reusable(out: Path, want: dict) -> bool:
    try:
        info = json.loads((out / BUILD_INFO).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if any(info.get(k) != want[k] for k in ("requested", "packages", "format")):
        return False
    # A fallback build that lacked a style is retried only once npm exists to fetch it.
    return not info.get("missing") or shutil.which("npm") is None


def _requested(out: Path) -> list | None:
    """The styles an earlier build in `out` was asked for (None: no readable build there)."""
    try:
        return json.loads((out / BUILD_INFO).read_text(encoding="utf-8")).get("requested")
    except (OSError, ValueError, AttributeError):
        return None


def build_emoji(out_dir: str | os.PathLike, styles=("google", "twitter"),
                cache_dir: str | os.PathLike | None = None, *,
                packages: dict[str, NpmPackage] | None = None, overwrite: bool = True) -> Path:
    """Build (or reuse) the emoji folder dataset at `out_dir` and return its path.

    `packages` overrides the pinned releases (another version, a mirror's tarball placed in
    `cache_dir`). The build goes to a temporary sibling folder and is renamed into place, so an
    interrupted build never looks finished. An earlier build of the same styles with older
    packages or format is rebuilt in place (a refresh); one of other styles is replaced only with
    overwrite=True (the default, for the dataset cache; `blinkgen data emoji` passes its
    --overwrite flag)."""
    styles = parse_styles(styles)
    packages = {**PACKAGES, **(packages or {})}
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    out = Path(out_dir)
    want = {"requested": list(styles), "packages": {s: packages[s].spec for s in styles}, "format": BUILD_FORMAT}
    if _reusable(out, want):
        log.info("emoji dataset already built at %s", out)
        return out
    if out.exists() and not (out.is_dir() and ((out / BUILD_INFO).exists() or not any(out.iterdir()))):
        raise DataError(f"{out} exists and is not an emoji dataset built by blinkgen; choose another --out")
    if not overwrite and _requested(out) not in (None, want["requested"]):  # an older build of the same
        raise OutputExistsError(f"{out} holds an emoji build of other styles ({', '.join(_requested(out))}); "
                                "pass --overwrite to replace it, or choose another --out")  # styles is refreshed
    have_npm, font = shutil.which("npm") is not None, None
    sources, missing = {}, []
    for s in styles:
        if have_npm or (cache / packages[s].filename).is_file():
            sources[s] = ("npm", fetch_tarball(packages[s], cache))
        elif s == "google" and (font := font or find_noto_font()):
            sources[s] = ("font", font)
        else:
            missing.append(s)
    hint = ("install npm (apt-get install npm) for every style, or the Noto Color Emoji font "
            "(apt-get install fonts-noto-color-emoji) for the google style")
    if not sources:
        raise DataError(f"cannot build emoji styles {', '.join(missing)}: npm is not on PATH, {cache} "
                        f"holds no cached tarball{', and no Noto Color Emoji font was found' * ('google' in missing)}"
                        f"; {hint}")
    if missing:
        log.warning("emoji styles %s skipped: npm is missing; %s", missing, hint)
    with replacing_folder(out) as tmp:  # the old build stays until the new one is complete
        rows, npm_licence = [], b""
        for s, (kind, path) in sources.items():
            if kind == "npm":
                r, npm_licence = build_style_from_tarball(path, s, tmp)
            else:
                log.warning("npm is missing: rendering the google style from the font %s", path)
                r = build_google_from_font(path, tmp)
            rows += r
        _write_licences(tmp, list(sources), any(k == "npm" for k, _ in sources.values()), npm_licence)
        _write_jsonl_atomic(rows, tmp / METADATA_NAME)
        info = {**want, "built": {s: k for s, (k, _) in sources.items()}, "missing": missing,
                "images": {s: sum(r["source"] == s for r in rows) for s in sources}}
        (tmp / BUILD_INFO).write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
    log.info("built emoji dataset at %s: %s", out, info["images"])
    return out


NOTO_FONT_INSTALL = "apt-get install -y fonts-noto-color-emoji"  # Debian / Ubuntu


def default_noto_font_dir(size: int) -> Path:
    return Path.home() / ".cache" / "blinkgen" / "datasets" / f"noto-font-{size}"


def build_noto_font(out_dir: str | os.PathLike, size: int = 128) -> Path:
    """Build (or reuse) a folder dataset of Noto Color Emoji rendered from the installed font at
    size x size -- the sharp high-resolution images the npm packages (64 px at most) cannot give;
    the upscaler trains on them. DataError naming the package to install when the font is absent."""
    out = Path(out_dir)
    want = {"source": "Noto Color Emoji font", "size": int(size), "format": BUILD_FORMAT}
    try:
        if {k: json.loads((out / BUILD_INFO).read_text()).get(k) for k in want} == want:
            return out
    except (OSError, ValueError):
        pass
    font = find_noto_font()
    if font is None:
        raise DataError(f"the Noto Color Emoji font is not installed; install it with `{NOTO_FONT_INSTALL}` "
                        "(Debian/Ubuntu package fonts-noto-color-emoji), then run again")
    if out.exists() and any(out.iterdir()) and not (out / BUILD_INFO).exists():
        raise DataError(f"{out} exists and is not a dataset built by blinkgen; choose another folder")
    with replacing_folder(out) as tmp:
        rows = build_google_from_font(font, tmp, size)
        _write_licences(tmp, ["google"], False, b"", size)
        _write_jsonl_atomic(rows, tmp / METADATA_NAME)
        (tmp / BUILD_INFO).write_text(json.dumps({**want, "font": str(font), "images": len(rows)}, indent=1) + "\n")
    return out
