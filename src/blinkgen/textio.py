"""Reading the text files users give us (captions, prompt lists, candidate captions, key files,
JSON configs) the same way everywhere.

What users' editors really save: UTF-8 with a byte-order mark (EF BB BF) and CRLF line ends
(Windows Notepad, Excel's "CSV UTF-8"), UTF-16 with a byte-order mark (Notepad's "Unicode"),
classic-Mac CR line ends. Python's `read_text()` keeps the mark as U+FEFF (which then breaks
`json.loads` of the first row, or ends up inside a caption) and uses the locale's encoding (cp1252
on Windows). So every user text file goes through here: the encoding comes from the byte-order
mark (UTF-8 when there is none), the mark is dropped, and CRLF/CR become LF.

Errors: bytes that are not valid in that encoding raise `InputFileError` naming the file, the byte
and its offset (never a traceback, never silent U+FFFD replacement characters in captions).
"""
from __future__ import annotations

import codecs
import os
import re
from pathlib import Path

from .errors import InputFileError

BOM = "\ufeff"
# Longest first: the UTF-32-LE mark starts with the UTF-16-LE one.
_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
         (codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))
_NEWLINE = re.compile(r"\r\n|\r|\n")
_NEWLINE_BYTES = re.compile(rb"\r\n|\r|\n")  # in UTF-8 these bytes never occur inside a character


def sniff_encoding(data: bytes) -> str:
    """The codec named by `data`'s byte-order mark; "utf-8" when it has none."""
    return next((enc for bom, enc in _BOMS if data.startswith(bom)), "utf-8")


def _undecodable(name: str, data: bytes, enc: str, e: UnicodeDecodeError) -> InputFileError:
    what = "UTF-8" if enc.startswith("utf-8") else enc.upper()
    return InputFileError(f"{name} is not {what} text (byte 0x{data[e.start]:02x} at offset {e.start}); "
                          "save it as UTF-8")


def decode_text(data: bytes, name: str = "text") -> str:
    """bytes -> str with the byte-order mark dropped and every line end as "\\n".
    Raises InputFileError when the bytes are not valid UTF-8 (or the UTF-16/32 their mark names)."""
    enc = sniff_encoding(data)
    try:
        text = data.decode(enc)
    except UnicodeDecodeError as e:
        if not data.startswith(codecs.BOM_UTF32_LE):
            raise _undecodable(name, data, enc, e) from None
        try:  # FF FE 00 00 is also UTF-16-LE's mark before a NUL character: that reading, if valid
            text = data.decode("utf-16")
        except UnicodeDecodeError:
            raise _undecodable(name, data, enc, e) from None
    return _NEWLINE.sub("\n", text.lstrip(BOM))


def decode_lines(data: bytes) -> list[str | None]:
    """bytes -> lines without their ends, decoding each line on its own: an undecodable line is
    None instead of spoiling the whole file (one bad row of a metadata.jsonl skips one row).
    Splits on CRLF, CR and LF only -- never on U+2028 or form feeds, which JSON strings may hold."""
    enc = sniff_encoding(data)
    if enc.startswith("utf-8"):
        raw = _NEWLINE_BYTES.split(data[len(codecs.BOM_UTF8):] if enc == "utf-8-sig" else data)
        out: list[str | None] = []
        for b in raw:
            try:
                out.append(b.decode("utf-8"))
            except UnicodeDecodeError:
                out.append(None)
        if out and out[0] is not None:
            out[0] = out[0].lstrip(BOM)
    else:  # UTF-16/32 cannot be split as bytes
        try:
            out = list(_NEWLINE.split(data.decode(enc).lstrip(BOM)))
        except UnicodeDecodeError:
            return [None]
    if out and out[-1] == "":  # the end of the last line is not the start of another
        out.pop()
    return out


def read_bytes(path: str | os.PathLike, what: str = "file") -> bytes:
    """A file's bytes; InputFileError (one line) when it is missing or unreadable."""
    p = Path(path)
    try:
        return p.read_bytes()
    except FileNotFoundError:
        raise InputFileError(f"{what} not found: {p}") from None
    except OSError as e:
        raise InputFileError(f"cannot read {what} {p}: {e.strerror or e}") from None


def read_text(path: str | os.PathLike, what: str = "file") -> str:
    """A user's text file as str (see the module doc); InputFileError when missing or undecodable."""
    return decode_text(read_bytes(path, what), f"{what} {path}")


def read_lines(path: str | os.PathLike, what: str = "file") -> list[str]:
    """The non-empty lines of a user's text file, stripped of surrounding whitespace."""
    return [ln.strip() for ln in read_text(path, what).split("\n") if ln.strip()]


def read_json(path: str | os.PathLike, what: str = "JSON file"):
    """A user's JSON file (a byte-order mark is fine); InputFileError when it is not valid JSON."""
    import json

    text = read_text(path, what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise InputFileError(f"{what} {path} is not valid JSON: {e}") from None


def check_text(value: str, name: str = "prompt") -> str:
    """Refuse text that cannot be encoded: a NUL character, or a lone surrogate (U+D800-U+DFFF).

    A lone surrogate is what Python puts in a command-line argument for a byte that is not UTF-8
    (PEP 383's surrogateescape: byte 0xE9 becomes U+DCE9), so `blinkgen generate $'caf\\xe9'` in a
    Latin-1 terminal arrives here. Returns `value`; UserInputError naming the argument, the byte
    (or character) and its character offset otherwise."""
    from .errors import UserInputError

    for i, ch in enumerate(value):
        o = ord(ch)
        if o == 0:
            raise UserInputError(f"{name} must not contain NUL characters (at character {i})")
        if 0xDC80 <= o <= 0xDCFF:
            hint = " or give the prompt in a UTF-8 file (--prompts-file)" if name == "prompt" else ""
            raise UserInputError(f"{name} is not UTF-8 text: byte 0x{o - 0xDC00:02x} at character {i}; "
                                 f"set the terminal to UTF-8{hint}")
        if 0xD800 <= o <= 0xDFFF:
            raise UserInputError(f"{name} holds a lone surrogate U+{o:04X} at character {i}: not valid Unicode text")
    return value
