"""Sampling speed by torch thread count, on an idle machine and with other work holding cores.

For each load level (0 .. --max-load busy processes, each a pure-Python loop holding one core, as
another job would) and each thread count (1 .. torch's default, and "auto" = speed/threads.py's
choice measured under that load), the embedded default draws --runs images at batch 1 (median
seconds) and one batch of 8. Images are also checked bit-identical across thread counts.

    python bench/bench_threads.py --max-load 1 --out bench/results/threads.json
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch


def _spin() -> None:
    while True:
        pass


def measure(pipe, threads: int, runs: int) -> dict:
    torch.set_num_threads(threads)
    pipe.generate("a red heart", seed=99)  # warm this thread count
    b1 = []
    for i in range(runs):
        t = time.perf_counter()
        pipe.generate("a red heart", seed=i)
        b1.append(time.perf_counter() - t)
    t = time.perf_counter()
    ims = pipe.generate("a red heart", n=8, seed=0)
    return {"threads": threads, "b1_median_s": statistics.median(b1), "b1_s": b1,
            "b8_s": time.perf_counter() - t, "_images": [np.asarray(im) for im in ims]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--max-load", type=int, default=1, help="busy processes to add, 0 .. this")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    import blinkgen
    from blinkgen.speed.threads import choose_threads, idle_cpus

    most = torch.get_num_threads()
    pipe = blinkgen.load(a.model)
    rows, ref = [], None
    for load in range(a.max_load + 1):
        procs = [mp.Process(target=_spin, daemon=True) for _ in range(load)]
        for p in procs:
            p.start()
        try:
            time.sleep(0.5)
            idle = idle_cpus(0.2)
            auto = choose_threads(None, most, idle=idle)
            for threads in sorted(set(range(1, most + 1))):
                r = measure(pipe, threads, a.runs)
                ims = r.pop("_images")
                ref = ims if ref is None else ref
                r.update(load=load, idle_cpus=round(idle, 2), auto_choice=auto,
                         same_images=all(np.array_equal(x, y) for x, y in zip(ims, ref)))
                rows.append(r)
                print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items() if k != "b1_s"}),
                      flush=True)
        finally:
            for p in procs:
                p.terminate()
    res = {"command": " ".join(sys.argv), "model": a.model, "cpu_count": os.cpu_count(), "torch_default_threads": most,
           "rows": rows}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
