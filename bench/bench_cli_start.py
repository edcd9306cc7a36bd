"""Cold-start wall time of the CLI: `blinkgen generate` in a fresh process, as a user runs it.

Two cases, each a new Python process:
- first image: the embedded default (or --model) draws one image to a new file;
- refusal: the same command towards a file that exists (exit 2, nothing drawn).

With --baseline-src DIR (a `src/` folder of another checkout, e.g. `git worktree add /tmp/old
<commit>`), each run of this checkout is paired with one of that checkout, alternating which goes
first, so both see the same machine load; the JSON holds every time and the medians.

    python bench/bench_cli_start.py --runs 5 --baseline-src /tmp/old/src --out bench/results/cli_start.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def one_run(src: Path, case: str, model: str, steps: int, workdir: Path) -> float:
    """Wall seconds of one cold `generate` with blinkgen imported from `src`."""
    out = workdir / "x.png"
    if case == "first image":
        out.unlink(missing_ok=True)
    elif not out.exists():
        out.write_bytes(b"an existing file")
    env = {**os.environ, "PYTHONPATH": str(src), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "blinkgen.cli", "generate", "a red heart", "--model", model, "--steps", str(steps),
           "-o", str(out)]
    t = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    wall = time.perf_counter() - t
    want = 0 if case == "first image" else 2
    if r.returncode != want:
        raise SystemExit(f"{case}: exit {r.returncode}, expected {want}:\n{r.stderr[-2000:]}")
    return wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=5, help="runs per case (and per checkout)")
    ap.add_argument("--model", default="default")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--baseline-src", type=Path, default=None, help="src/ of the checkout to compare against")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    sides = {"this": SRC} | ({"baseline": a.baseline_src.resolve()} if a.baseline_src else {})
    times: dict[str, dict[str, list[float]]] = {c: {s: [] for s in sides} for c in ("first image", "refusal")}
    with tempfile.TemporaryDirectory() as tmp:
        for case in times:
            for i in range(a.runs):
                order = list(sides) if i % 2 == 0 else list(sides)[::-1]
                for side in order:
                    d = Path(tmp) / side
                    d.mkdir(exist_ok=True)
                    times[case][side].append(one_run(sides[side], case, a.model, a.steps, d))
                print(case, i, {s: round(v[-1], 2) for s, v in times[case].items()}, flush=True)
    med = {c: {s: statistics.median(v) for s, v in t.items()} for c, t in times.items()}
    load = os.getloadavg()
    res = {"command": " ".join(sys.argv), "runs": a.runs, "model": a.model, "steps": a.steps,
           "sides": {s: str(p) for s, p in sides.items()}, "seconds": times, "median_s": med,
           "load_average_after": load, "machine": platform.processor() or platform.machine(),
           "cpu_count": os.cpu_count()}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(res, indent=1))
    for c, m in med.items():
        print(f"{c}: " + ", ".join(f"{s} {v:.2f} s" for s, v in m.items()))


if __name__ == "__main__":
    main()
