"""How far the shapes-only recipe is from the 0.8 gate, by its own learning curve.

Reads the committed shapes results files (`bench_shapes_seeds`-scored runs: `images_seen`,
`train_stats.cpu_seconds_total`, `shapes_128_mean.overall`), fits the overall accuracy against
images seen two ways -- a straight line, and a line in log2(images) (accuracy gained per doubling,
the shape learning curves usually take) -- and reports where each fit reaches the target and what
that costs at the cheapest measured CPU-seconds per image. An extrapolation, not a measurement: it says
what the measured trend asks for, and both fits are printed so the reader sees the spread.

    python bench/shapes_images_curve.py bench/results/shapes_only_sdpa_math_xs.json \
        bench/results/shapes_only_xs_kinds.json --target 0.8 --out bench/results/shapes_images_curve.json
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path


def points(files: list[str]) -> list[dict]:
    """One point per run with images seen, CPU-seconds and a seed-set mean; duplicates (the same
    run copied into a later file as its reference) are kept once, by (images, CPU-s, score)."""
    out, seen = [], set()
    for f in files:
        for name, r in json.loads(Path(f).read_text())["runs"].items():
            imgs = r.get("images_seen")
            cpu = (r.get("train_stats") or {}).get("cpu_seconds_total")
            acc = (r.get("shapes_128_mean") or {}).get("overall")
            if not (imgs and cpu and acc is not None):
                continue
            key = (int(imgs), round(float(cpu), 1), round(float(acc), 6))
            if key not in seen:
                seen.add(key)
                out.append({"file": Path(f).name, "run": name, "images": int(imgs), "cpu_s": float(cpu),
                            "overall": float(acc), "preset": (r.get("training") or {}).get("preset")})
    return out


def fit(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares y = a + b x; ValueError with fewer than two distinct x."""
    n = len(xs)
    if n < 2 or len(set(xs)) < 2:
        raise ValueError("need at least two runs with different images seen")
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
    return my - b * mx, b


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("files", nargs="+")
    ap.add_argument("--target", type=float, default=0.8)
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    pts = points(a.files)
    if len(pts) < 2:
        raise ValueError("need at least two runs with different images seen")
    xs = [p["images"] / 1e6 for p in pts]
    ys = [p["overall"] for p in pts]
    best = min(pts, key=lambda p: p["cpu_s"] / p["images"])  # the cheapest measured CPU-s per image
    cpu_per_img = best["cpu_s"] / best["images"]
    res = {"points": pts, "target": a.target, "cpu_s_per_image": cpu_per_img, "cheapest_run": best["run"]}
    for name, x_of, images_at, unit in (
            ("linear", lambda x: x, lambda u: u, "accuracy per million images"),
            ("log2", math.log2, lambda u: 2 ** u, "accuracy per doubling")):
        icpt, slope = fit([x_of(x) for x in xs], ys)
        need_m = images_at((a.target - icpt) / slope) if slope > 0 else math.inf
        res[name] = {"intercept": icpt, "slope": slope, "slope_unit": unit, "images_for_target_M": need_m,
                     "cpu_hours_for_target": need_m * 1e6 * cpu_per_img / 3600}
    for p in pts:
        print(f"{p['run']:>24} {p['images'] / 1e6:6.3f}M images {p['cpu_s'] / 3600:5.2f} CPU-h  overall {p['overall']:.3f}")
    for name in ("linear", "log2"):
        r = res[name]
        print(f"{name}: slope {r['slope']:.4f} {r['slope_unit']}; {a.target} at {r['images_for_target_M']:.3g}M images"
              f" = {r['cpu_hours_for_target']:.3g} CPU-h at {cpu_per_img * 1e3:.2f} CPU-ms per image")
    if a.out:
        Path(a.out).write_text(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    main()
