"""Quality against latency for a bench_blink.py results file: one PNG, three panels (FD, retrieval
R@1 and nearest-neighbour hits against the median batch-1 end-to-end latency, log scale), one
marker per rung, the reference rung's quality +-10% shaded (the issue's band) and the 100 ms
target as a vertical line.

    python bench/plot_blink.py bench/results/blink.json bench/results/blink_ladder.png
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

TARGET_MS = 100.0


def plot(results: Path, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    r = json.loads(Path(results).read_text())
    rows = r["rungs"]
    ref = rows[0]
    panels = [("FD (lower is better)", lambda x: x["quality"]["fd"], -1),
              ("retrieval R@1 (higher is better)", lambda x: x["quality"]["retrieval_R@1"], 1)]
    if "nn" in ref["quality"]:
        panels.append(("nearest-neighbour hit rate (higher is better)", lambda x: x["quality"]["nn"]["rate"], 1))
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    max_ms = max(x["latency"]["total"]["p50_ms"] for x in rows)
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.4), constrained_layout=True)
    colours = {"teacher": "tab:blue", "diffusers": "tab:red", "shortcut": "tab:green", "consistency": "tab:orange"}
    for ax, (label, get, sign) in zip(axes, panels):
        base = get(ref)
        lo, hi = (base, base * 1.1) if sign < 0 else (base * 0.9, base)
        ax.axhspan(lo, hi, color="0.9", zorder=0, label="within 10% of the reference")
        ax.axvline(TARGET_MS, color="0.4", ls="--", lw=1, label=f"{TARGET_MS:.0f} ms target")
        for x in rows:
            kind = x["rung"].split()[0]
            engine = x.get("engine", "fp32") != "fp32"
            ax.scatter(x["latency"]["total"]["p50_ms"], get(x), s=30, zorder=3, marker="s" if engine else "o",
                       color=colours.get(kind, "tab:gray"))
            ax.annotate(x["rung"].replace(" (reference)", "*"), (x["latency"]["total"]["p50_ms"], get(x)),
                        fontsize=6, xytext=(3, 3), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_xticks([t for t in (20, 30, 50, 100, 200, 500, 1000) if t <= 2 * max_ms])
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("p50 latency, prompt -> PNG, batch 1 (ms)")
        ax.set_title(label, fontsize=10)
    axes[0].legend(fontsize=7, loc="upper right")
    fig.suptitle(f"blink ladder ({r['threads']} threads; load average "
                 f"{r['machine']['load_average_at_start'][0]:.1f} -> {r['machine']['load_average_at_end'][0]:.1f})",
                 fontsize=10)
    fig.savefig(out, dpi=130)
    return out


if __name__ == "__main__":
    print(plot(Path(sys.argv[1]), Path(sys.argv[2])))
