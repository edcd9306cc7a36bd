"""Issue 10, fault 1 and its kind: every user text file (captions, prompt lists, candidate
captions, API keys, JSON configs) is read the same way -- a byte-order mark and CRLF/CR line ends
from a Windows editor are fine, UTF-16 with a mark is fine, and undecodable bytes are one clear
error, never U+FEFF in a caption or a lost first row. Real files in tmp dirs, no mocks."""
import codecs
import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from PIL import Image

from blinkgen.data.folder import BAD_ROW, NOT_TEXT, load_folder, normalize_caption, scan_folder
from blinkgen.errors import InputFileError, UserInputError
from blinkgen.textio import check_text, decode_lines, decode_text, read_json, read_lines
from conftest import run_cli

ENCODINGS = {  # how editors save text: name -> bytes of str
    "utf-8": lambda s: s.encode("utf-8"),
    "utf-8 + BOM": lambda s: codecs.BOM_UTF8 + s.encode("utf-8"),
    "utf-16-le + BOM": lambda s: codecs.BOM_UTF16_LE + s.encode("utf-16-le"),
    "utf-16-be + BOM": lambda s: codecs.BOM_UTF16_BE + s.encode("utf-16-be"),
    "utf-32-le + BOM": lambda s: codecs.BOM_UTF32_LE + s.encode("utf-32-le"),
}
EOLS = ["\n", "\r\n", "\r"]
# any character a caption may hold (no lone surrogates: they cannot be encoded at all)
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=30)
LINE_TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), min_size=1, max_size=30)


def _png(path, color=(255, 0, 0)):
    Image.new("RGB", (16, 16), color).save(path)


def test_issue_example_windows_metadata_loads_both_rows(tmp_path):
    """The filed input: a.png, b.png and a metadata.jsonl with a UTF-8 BOM and CRLF ends."""
    _png(tmp_path / "a.png")
    _png(tmp_path / "b.png", (0, 0, 255))
    rows = [{"file_name": "a.png", "text": "red square"}, {"file_name": "b.png", "text": "blue square"}]
    (tmp_path / "metadata.jsonl").write_bytes(codecs.BOM_UTF8 + "".join(json.dumps(r) + "\r\n" for r in rows).encode())
    r = run_cli("data", "inspect", tmp_path)
    assert "loaded 2 images, skipped 0" in r.stdout, r.stdout
    ds = load_folder(tmp_path, size=16)
    assert ds.captions == [["red square"], ["blue square"]]
    assert not any("\ufeff" in c for caps in ds.captions for c in caps)


def test_sidecar_with_bom_gives_a_clean_caption(tmp_path):
    _png(tmp_path / "a.png")
    (tmp_path / "a.txt").write_bytes(codecs.BOM_UTF8 + "red square\r\nа red box\r\n".encode())
    assert load_folder(tmp_path, size=16).captions == [["red square", "а red box"]]


def test_non_utf8_row_and_sidecar_are_skipped_by_name_not_fatal(tmp_path):
    for n in "abc":
        _png(tmp_path / f"{n}.png")
    (tmp_path / "metadata.jsonl").write_bytes(
        b'{"file_name": "a.png", "text": "caf\xe9"}\n{"file_name": "b.png", "text": "fine"}\n')  # latin-1 row 1
    (tmp_path / "c.txt").write_bytes("naïve".encode("cp1252"))
    ds = load_folder(tmp_path, size=16)
    assert ds.names == ["b.png"] and ds.captions == [["fine"]]
    assert ds.report.skipped[BAD_ROW] == ["metadata.jsonl:1"]
    assert ds.report.skipped[NOT_TEXT] == ["c.txt"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(TEXT, min_size=1, max_size=4), st.sampled_from(sorted(ENCODINGS)), st.sampled_from(EOLS),
       st.booleans(), st.booleans())
def test_metadata_in_any_editor_encoding_reads_every_row(texts, enc, eol, final_eol, blank_lines):
    """Property: whatever encoding mark and line ends, every row is read and every caption is
    the normalised text (no U+FEFF, JSON strings with U+2028 or \\r inside stay whole)."""
    texts = [t for t in texts if normalize_caption(t)] or ["x"]
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        lines = [json.dumps({"file_name": f"{i}.png", "text": t}, ensure_ascii=False) for i, t in enumerate(texts)]
        if blank_lines:
            lines.insert(1, "   ")
        body = eol.join(lines) + (eol if final_eol else "")
        (root / "metadata.jsonl").write_bytes(ENCODINGS[enc](body))
        for i in range(len(texts)):
            (root / f"{i}.png").write_bytes(b"")  # scan_folder decodes no pixels
        items, report, _ = scan_folder(root)
    assert report.n_skipped == 0
    assert [name for name, _ in items] == sorted(f"{i}.png" for i in range(len(texts)))
    got = {name: [normalize_caption(c) for c in caps] for name, caps in items}
    assert got == {f"{i}.png": [normalize_caption(t)] for i, t in enumerate(texts)}
    assert not any("\ufeff" in c for caps in got.values() for c in caps)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(LINE_TEXT, min_size=1, max_size=4), st.sampled_from(sorted(ENCODINGS)), st.sampled_from(EOLS))
def test_sidecar_in_any_editor_encoding(lines, enc, eol):
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        (root / "a.png").write_bytes(b"")
        (root / "a.txt").write_bytes(ENCODINGS[enc](eol.join(lines) + eol))
        items, report, _ = scan_folder(root)
    want = [normalize_caption(t) for t in lines if t.strip()]
    assert report.n_skipped == 0
    assert [normalize_caption(c) for c in items[0][1]] == want


@given(TEXT, st.sampled_from(sorted(ENCODINGS)), st.sampled_from(EOLS))
def test_decode_text_drops_the_mark_and_normalises_line_ends(text, enc, eol):
    text = text.lstrip("\ufeff")  # a leading U+FEFF IS a mark; inside the text it is content
    if enc == "utf-16-le + BOM" and text.startswith("\x00"):
        # FF FE 00 00 is both UTF-32-LE's mark and UTF-16-LE's mark + NUL: undecidable for the
        # lone NUL (read as an empty UTF-32 file); a longer text falls back to UTF-16 (below)
        text = text if len(text) > 1 else "x"
    written = text.replace("\n", eol)  # what the editor saved: a text "\r\n" with eol "\r" is "\r\r"
    got = decode_text(ENCODINGS[enc](written))
    assert got == written.replace("\r\n", "\n").replace("\r", "\n")  # every CRLF, CR, LF: one "\n"
    assert not got.startswith("\ufeff")


@given(st.lists(LINE_TEXT, max_size=5), st.sampled_from(EOLS))
def test_decode_lines_round_trips_lines(lines, eol):
    lines = [ln.lstrip("\ufeff") if i == 0 else ln for i, ln in enumerate(lines)]
    data = codecs.BOM_UTF8 + (eol.join(lines) + (eol if lines else "")).encode()
    assert decode_lines(data) == lines


def test_undecodable_text_is_one_clear_error(tmp_path):
    p = tmp_path / "prompts.txt"
    p.write_bytes(b"ok\n\xff\xfe\xfd")
    with pytest.raises(InputFileError, match=r"prompts file .*prompts.txt is not UTF-8 text \(byte 0xff at offset 3\)"):
        read_lines(p, "prompts file")
    with pytest.raises(InputFileError, match="not found"):
        read_lines(tmp_path / "nope.txt", "prompts file")


# --- the sweep: every other user text file blinkgen reads ---------------------------------------

WINDOWS = lambda s: codecs.BOM_UTF8 + s.replace("\n", "\r\n").encode()  # noqa: E731


def test_prompt_candidate_and_key_files_with_bom_and_crlf(tmp_path):
    from blinkgen.eval.caption import _candidates
    from blinkgen.eval.evaluate import _prompts_from_file
    from blinkgen.serve.limits import load_api_keys

    f = tmp_path / "list.txt"
    f.write_bytes(WINDOWS("red heart\n\nblue star\n"))
    assert _prompts_from_file(f) == ["red heart", "blue star"]              # eval --prompts
    assert _candidates(str(f), None) == ["red heart", "blue star"]          # caption --candidates
    assert read_lines(f) == ["red heart", "blue star"]                      # train --prompts-file
    keys = tmp_path / "keys.txt"
    keys.write_bytes(WINDOWS("key-one  # mine\nkey-two\n"))
    assert load_api_keys(keys, env={}) == {"key-one", "key-two"}            # serve --api-key-file


def test_json_configs_with_bom(tmp_path, tiny_model_dir):
    import shutil

    import blinkgen
    from blinkgen.train.config import TrainConfig

    cfg = tmp_path / "train.json"
    cfg.write_bytes(WINDOWS(json.dumps({"steps": 3, "preset": "tiny"}, indent=1)))
    assert TrainConfig.from_json(cfg).steps == 3                            # train --config
    assert read_json(cfg)["preset"] == "tiny"
    model = tmp_path / "model"                                              # a model folder's config.json
    shutil.copytree(tiny_model_dir, model)
    (model / "config.json").write_bytes(WINDOWS((model / "config.json").read_text()))
    assert blinkgen.load(str(model)).image_size == 32


def test_utf16_text_starting_with_nul_is_not_taken_for_utf32():
    """Found by the property above: UTF-16-LE's mark before a NUL character is FF FE 00 00, the
    UTF-32-LE mark; decoding fell over ("not UTF-32 text") instead of reading it as UTF-16."""
    data = codecs.BOM_UTF16_LE + "\x000ab\r\nc".encode("utf-16-le")
    assert decode_text(data) == "\x000ab\nc"


# --- check_text: text from the command line or the API that cannot be encoded ---------------

@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")))
def test_check_text_accepts_any_encodable_text(s):
    assert check_text(s) is s


@pytest.mark.parametrize("raw,match", [
    ("caf\udce9 heart", "not UTF-8 text: byte 0xe9 at character 3"),  # argv byte 0xE9 (surrogateescape)
    ("a\x00b", "NUL characters"),
    ("x\ud800", "lone surrogate U\\+D800"),
])
def test_check_text_refuses_what_cannot_be_encoded(raw, match):
    with pytest.raises(UserInputError, match=match):
        check_text(raw, "prompt")


def test_a_non_utf8_prompt_is_one_clear_error_everywhere(tmp_path):
    """Regression: a non-UTF-8 byte in a CLI prompt reached the tokenizer and crashed with a
    TypeError traceback. Prompt, negative prompt and style are all checked in the pipeline."""
    import blinkgen
    from conftest import make_tiny

    pipe = blinkgen.load(str(make_tiny("diffusion", tmp_path / "m")))
    with pytest.raises(UserInputError, match="prompt is not UTF-8"):
        pipe.generate("caf\udce9", seed=0, steps=1)
    with pytest.raises(UserInputError, match="negative_prompt is not UTF-8"):
        pipe.settings(negative_prompt="x\udce9")
    with pytest.raises(UserInputError, match="style is not UTF-8"):
        pipe.settings(style="x\udce9")
