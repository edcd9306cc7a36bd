"""Issue 10, fault 5 for the data builders: `blinkgen data shapes` and `data emoji` never
replace someone else's files silently (--overwrite), while a stale build of the same emoji
styles is still refreshed in place. Local tarballs only (no network)."""
import json

import pytest

from blinkgen.data.emoji import BUILD_INFO, build_emoji
from blinkgen.data.npm import NpmPackage, sri_sha512
from blinkgen.errors import OutputExistsError
from conftest import run_cli
from test_data_emoji import _make_tarball


def test_data_shapes_refuses_to_replace_files_it_would_write(tmp_path):
    out = tmp_path / "d"
    out.mkdir()
    (out / "shapes-00001.png").write_bytes(b"mine")  # not a dataset yet, but a file it would write
    r = run_cli("data", "shapes", "--out", out, "-n", 3, check=False)
    assert r.returncode == 2 and "shapes-00001.png" in r.stderr and "--overwrite" in r.stderr
    assert (out / "shapes-00001.png").read_bytes() == b"mine"
    run_cli("data", "shapes", "--out", out, "-n", 3, "--overwrite")
    assert len((out / "metadata.jsonl").read_text().splitlines()) == 3


@pytest.fixture
def google_tarball(tmp_path):
    cache = tmp_path / "npm"
    cache.mkdir()
    pkg = NpmPackage("emoji-datasource-google", "0.0.1-test", "")
    _make_tarball(cache / pkg.filename)
    return cache, NpmPackage(pkg.name, pkg.version, sri_sha512(cache / pkg.filename))


def test_emoji_build_of_other_styles_is_not_replaced_silently(tmp_path, google_tarball):
    cache, pkg = google_tarball
    out = tmp_path / "emoji"
    out.mkdir()
    (out / BUILD_INFO).write_text(json.dumps({"requested": ["twitter"], "packages": {}}))
    with pytest.raises(OutputExistsError, match="other styles.*--overwrite"):
        build_emoji(out, styles="google", cache_dir=cache, packages={"google": pkg}, overwrite=False)
    assert json.loads((out / BUILD_INFO).read_text())["requested"] == ["twitter"]
    build_emoji(out, styles="google", cache_dir=cache, packages={"google": pkg}, overwrite=True)
    assert json.loads((out / BUILD_INFO).read_text())["requested"] == ["google"]


def test_stale_build_of_the_same_styles_is_refreshed(tmp_path, google_tarball):
    cache, pkg = google_tarball
    out = tmp_path / "emoji"
    out.mkdir()
    (out / BUILD_INFO).write_text(json.dumps({"requested": ["google"], "packages": {"google": "an older pin"}}))
    build_emoji(out, styles="google", cache_dir=cache, packages={"google": pkg}, overwrite=False)
    assert json.loads((out / BUILD_INFO).read_text())["packages"] == {"google": pkg.spec}
