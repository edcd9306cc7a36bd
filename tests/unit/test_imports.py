"""Import hygiene: every module under src/blinkgen imports on its own (no import cycle that only
works in one order), models/ imports no higher layer, and building the CLI loads no network.

Each module is imported first thing in its own process: one fresh interpreter imports torch (the
heavy third-party base, so the check costs seconds, not minutes), then forks once per module;
every fork starts with no blinkgen module loaded, exactly as `python -c "import <module>"` would."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import blinkgen
from conftest import CHILD_ENV

SRC = Path(blinkgen.__file__).resolve().parent
MODULES = sorted(".".join(("blinkgen", *p.relative_to(SRC).with_suffix("").parts)).removesuffix(".__init__")
                 for p in SRC.rglob("*.py"))

FORK_EACH = r"""
import importlib, json, os, sys, traceback
import torch  # noqa: F401  (shared base; blinkgen itself is imported only in the forks)
assert not any(m == "blinkgen" or m.startswith("blinkgen.") for m in sys.modules)
out = {}
for name in json.loads(sys.argv[1]):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            importlib.import_module(name)
            msg = ""
        except BaseException:
            msg = traceback.format_exc(limit=4)
        os.write(w, msg.encode())
        os._exit(0)
    os.close(w)
    data = b""
    while chunk := os.read(r, 1 << 16):
        data += chunk
    os.close(r)
    os.waitpid(pid, 0)
    out[name] = data.decode()
print(json.dumps(out))
"""


def test_every_module_imports_on_its_own():
    assert "blinkgen.speed.int8" in MODULES and "blinkgen.families.ar.pipeline" in MODULES
    r = subprocess.run([sys.executable, "-c", FORK_EACH, json.dumps(MODULES)], capture_output=True, text=True,
                       env=CHILD_ENV, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    failed = {k: v for k, v in json.loads(r.stdout.strip().splitlines()[-1]).items() if v}
    assert not failed, "\n\n".join(f"{k}:\n{v}" for k, v in failed.items())


def test_the_cycle_the_issue_named_is_gone():
    """In a plain fresh interpreter, the int8 decode view imports first thing (it failed with a
    partially initialised module when it lived in models/llama_fused.py)."""
    r = subprocess.run([sys.executable, "-c", "from blinkgen.speed.int8 import int8_view"], capture_output=True,
                       text=True, env=CHILD_ENV, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]


def imported_modules(path: Path) -> set[str]:
    """Absolute names of the blinkgen modules a file imports (relative imports resolved)."""
    pkg = ("blinkgen", *path.relative_to(SRC).parent.parts)
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = pkg[:len(pkg) - node.level + 1] if node.level else ()
            out.add(".".join((*base, *(node.module or "").split("."))).strip("."))
    return {m for m in out if m.startswith("blinkgen")}


@pytest.mark.parametrize("path", sorted((SRC / "models").glob("*.py")), ids=lambda p: p.name)
def test_models_import_no_higher_layer(path):
    higher = ("blinkgen.sampling", "blinkgen.speed", "blinkgen.train", "blinkgen.serve", "blinkgen.families",
              "blinkgen.pipeline", "blinkgen.api")
    bad = sorted(m for m in imported_modules(path) if m.startswith(higher))
    assert not bad, f"models/{path.name} imports {bad}: networks only (DESIGN.md)"


def test_building_the_cli_loads_no_network():
    """The registry reads every family for the help texts without importing torch, so
    `blinkgen --help` and `blinkgen data ...` stay instant."""
    code = ("import sys; from blinkgen.cli import build_parser; build_parser(); "
            "from blinkgen import families; families.all_families(); print('torch' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=CHILD_ENV, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "False", r.stderr[-2000:] or r.stdout
