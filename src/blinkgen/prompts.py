"""Prompt templates: inline alternatives and wildcard files, resolved per image from its seed.

    a {red|blue|green} heart          one of the alternatives
    a __colour__ __shape__            one line of the wildcard files colour.txt and shape.txt
    {a|two} {__colour__|pale} {circle|square}     nested freely; a chosen line is itself a template

Rules:
- `{...}` with at least one top-level `|` is a choice; braces without a `|` stay literal text
  ("{x}"), as does anything after a backslash (`\\{`, `\\|`, `\\_`, `\\\\`).
- `__name__` (letters, digits, `_`, `-`, and `/` for subfolders) is one non-empty line of the
  file `name.txt`, looked up in these folders, first hit wins (`wildcard_dirs`):
    1. each `--wildcards DIR` given on the command line (or `dirs` in Python), in order;
    2. `wildcards/` beside the prompts file (when the prompts come from a file);
    3. each folder in $BLINKGEN_WILDCARDS (separated like PATH);
    4. `wildcards/` in the current folder.
  Wildcard files are read through textio (any editor's encoding and line ends); every non-empty
  line is one choice. An unknown name is an error that lists the folders searched.
- Every choice is drawn from the image's own seed and the choice's position in the template
  (a hash of both, `_draw`), never from a shared random stream: an image's prompt depends only on
  its template and seed, so the same list and seeds give the same prompts -- and, since images
  depend only on (prompt, seed, settings), the same images -- whatever the batch size or order.
  The draw is separate from the image's noise (the noise uses the seed itself).
- Chosen lines may hold templates too, up to MAX_DEPTH levels (a deeper chain is a cycle).
"""
from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence, Union

from .errors import UserInputError
from .textio import read_lines

WILDCARDS_ENV = "BLINKGEN_WILDCARDS"
MAX_DEPTH = 10
MAX_CHOICE_SITES = 1000  # choices drawn for one prompt: a guard against exponential templates
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-]*(?:/[A-Za-z0-9][A-Za-z0-9_\-]*)*")


# --- parsing: template -> tree --------------------------------------------------------------
@dataclass(frozen=True)
class Choice:
    options: tuple["Seq", ...]


@dataclass(frozen=True)
class Wildcard:
    name: str


Part = Union[str, Choice, Wildcard]
Seq = tuple  # tuple[Part, ...]


def parse(template: str) -> Seq:
    """A template -> a tuple of parts (text, Choice, Wildcard). UserInputError for an unclosed
    `{...|...` choice, naming the position."""
    return _parse_seq(template, 0, top=True)[0]


def _parse_seq(s: str, i: int, top: bool) -> tuple[Seq, int]:
    """Parse until the end (top) or an unnested `|` / `}` (inside a choice)."""
    out: list[Part] = []
    buf: list[str] = []

    def flush():
        if buf:
            out.append("".join(buf))
            buf.clear()

    while i < len(s):
        c = s[i]
        if c == "\\" and i + 1 < len(s):
            buf.append(s[i + 1])
            i += 2
        elif c == "{":
            close = _matching(s, i)
            inner = s[i + 1:close] if close is not None else ""
            if close is not None and _has_top_bar(inner):
                flush()
                options, j = [], i + 1
                while True:
                    seq, j = _parse_seq(s, j, top=False)
                    options.append(seq)
                    if s[j] == "}":
                        break
                    j += 1  # past "|"
                out.append(Choice(tuple(options)))
                i = j + 1
            elif close is not None:  # "{x}": literal braces around parsed text
                buf.append("{")
                flush()
                out.extend(_parse_seq(inner, 0, top=True)[0])
                buf.append("}")
                i = close + 1
            elif "|" in s[i:]:
                raise UserInputError(f"unclosed {{ at character {i + 1} of the prompt {s!r}")
            else:
                buf.append(c)
                i += 1
        elif not top and c in "|}":
            break
        elif c == "_" and s.startswith("__", i) and _wildcard_end(s, i) is not None:
            k = _wildcard_end(s, i)
            flush()
            out.append(Wildcard(s[i + 2:k]))
            i = k + 2
        else:
            buf.append(c)
            i += 1
    flush()
    return tuple(out), i


def _wildcard_end(s: str, i: int) -> int | None:
    """For "__name__" starting at i: the index of the closing "__", else None (then the
    underscores are plain text)."""
    k = s.find("__", i + 2)
    return k if k != -1 and _NAME.fullmatch(s[i + 2:k]) else None


def _matching(s: str, i: int) -> int | None:
    """Index of the `}` closing the `{` at i (escapes and nesting respected), or None."""
    depth, j = 0, i
    while j < len(s):
        if s[j] == "\\":
            j += 2
            continue
        if s[j] == "{":
            depth += 1
        elif s[j] == "}":
            depth -= 1
            if depth == 0:
                return j
        j += 1
    return None


def _has_top_bar(inner: str) -> bool:
    depth, j = 0, 0
    while j < len(inner):
        c = inner[j]
        if c == "\\":
            j += 2
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
        elif c == "|" and depth == 0:
            return True
        j += 1
    return False


def is_template(text: str) -> bool:
    """True when `text` has a choice or a wildcard (it resolves to something else)."""
    return any(not isinstance(p, str) for p in parse(text))


# --- wildcard files ---------------------------------------------------------------------------
def wildcard_dirs(dirs: Sequence[str | os.PathLike] = (), prompts_file: str | os.PathLike | None = None,
                  env: dict | None = None) -> tuple[Path, ...]:
    """The wildcard folders in lookup order (see the module doc); missing ones are kept (they
    are simply never hits) so an error can list what was searched."""
    env = os.environ if env is None else env
    out = [Path(d) for d in dirs]
    if prompts_file is not None:
        out.append(Path(prompts_file).resolve().parent / "wildcards")
    out += [Path(d) for d in env.get(WILDCARDS_ENV, "").split(os.pathsep) if d]
    out.append(Path("wildcards"))
    return tuple(dict.fromkeys(out))


@dataclass
class Wildcards:
    """Wildcard files looked up in `dirs` (first hit wins), each read once."""

    dirs: tuple[Path, ...] = ()
    _cache: dict = field(default_factory=dict, repr=False)

    def choices(self, name: str) -> list[str]:
        """The non-empty lines of `name`.txt; UserInputError when no folder has it or it is empty."""
        if name in self._cache:
            return self._cache[name]
        if not _NAME.fullmatch(name):  # no "..", no absolute paths: names stay inside the folders
            raise UserInputError(f"bad wildcard name {name!r}")
        for d in self.dirs:
            f = d / f"{name}.txt"
            if f.is_file():
                lines = read_lines(f, "wildcard file")
                if not lines:
                    raise UserInputError(f"wildcard file {f} has no choices")
                self._cache[name] = lines
                return lines
        where = ", ".join(str(d) for d in self.dirs) or "nowhere (no folders given)"
        raise UserInputError(f"no wildcard file {name}.txt for __{name}__; looked in {where} "
                             f"(add folders with --wildcards DIR or ${WILDCARDS_ENV})")


# --- resolving ----------------------------------------------------------------------------------
def _draw(seed: int, site: int, n: int) -> int:
    """Index in [0, n) for choice number `site` of an image with `seed`: a hash of both (stable
    across Python versions and machines; bias below 2^-200)."""
    digest = hashlib.sha256(f"blinkgen-prompt:{seed}:{site}".encode()).digest()
    return int.from_bytes(digest, "big") % n


def resolve(template: str, seed: int, wildcards: Wildcards | None = None) -> str:
    """The prompt an image with `seed` gets from `template` (see the module doc). A plain prompt
    comes back unchanged. UserInputError for an unknown wildcard, an unclosed choice, nesting
    deeper than MAX_DEPTH, or an empty result."""
    wildcards = wildcards if wildcards is not None else Wildcards(wildcard_dirs())
    counter = [0]
    out = _resolve(parse(template), seed, wildcards, counter, [])
    if not out.strip():
        raise UserInputError(f"the template {template!r} resolved to an empty prompt for seed {seed}")
    return out


def _resolve(parts: Seq, seed: int, wc: Wildcards, counter: list[int], chain: list[str]) -> str:
    out = []
    for p in parts:
        if isinstance(p, str):
            out.append(p)
            continue
        counter[0] += 1
        if counter[0] > MAX_CHOICE_SITES:
            raise UserInputError(f"the prompt template draws more than {MAX_CHOICE_SITES} choices")
        if isinstance(p, Choice):
            out.append(_resolve(p.options[_draw(seed, counter[0], len(p.options))], seed, wc, counter, chain))
        else:
            if len(chain) >= MAX_DEPTH:
                raise UserInputError(f"wildcards nest more than {MAX_DEPTH} deep (a cycle?): "
                                     + " -> ".join(chain + [p.name]))
            lines = wc.choices(p.name)
            line = lines[_draw(seed, counter[0], len(lines))]
            out.append(_resolve(parse(line), seed, wc, counter, chain + [p.name]))
    return "".join(out)


def expand(templates: Sequence[str], seeds: Sequence[int], wildcards: Wildcards | None = None) -> list[str]:
    """resolve(templates[i], seeds[i]) for each i (one list of equal lengths)."""
    if len(templates) != len(seeds):
        raise UserInputError(f"{len(templates)} prompts but {len(seeds)} seeds")
    wildcards = wildcards if wildcards is not None else Wildcards(wildcard_dirs())
    return [resolve(t, s, wildcards) for t, s in zip(templates, seeds)]
