"""Quality against speed for a bench_diffusion.py results file: one PNG, two panels (FD and
alignment against batch-1 images/s, log scale), a line per solver through its step counts, the
peers as separate markers and the real-image ceilings as dashed lines. A person reads the
trade-off from this faster than from the table.

    python bench/plot_ladder.py bench/results/default.json bench/results/default_ladder.png
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def plot(results: Path, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker  # noqa: F401

    r = json.loads(Path(results).read_text())
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    panels = [("fd", "FD in evaluator space (lower is better)"), ("alignment", "prompt alignment (higher is better)")]
    by_rung: dict[str, list[dict]] = {}
    for row in r["rungs"]:
        by_rung.setdefault(row["rung"], []).append(row)
    for ax, (key, label) in zip(axes, panels):
        for name, rows in by_rung.items():
            rows = sorted(rows, key=lambda x: x["steps"])
            xs = [x["batch1"]["images_per_s"] for x in rows]
            ys = [x["quality"][key] for x in rows]
            peer = name in ("naive",) or name.startswith("diffusers")
            ax.plot(xs, ys, "s" if peer else "o-", label=name, markersize=7 if peer else 5)
            for x, y, row in zip(xs, ys, rows):
                ax.annotate(str(row["steps"]), (x, y), textcoords="offset points", xytext=(4, 3), fontsize=7)
        ceiling = {"fd": r["ceiling"].get("real_fd_between_halves"), "alignment": r["ceiling"].get("real_alignment")}[key]
        if ceiling is not None:
            ax.axhline(ceiling, ls="--", c="gray", lw=1)
            ax.text(0.01, ceiling, " real images" if key == "alignment" else " real half vs half (small-n floor)",
                    transform=ax.get_yaxis_transform(), va="bottom", fontsize=7, color="gray")
        ax.set_xscale("log")
        ax.set_xticks([0.25, 0.5, 1, 2, 4, 8], ["0.25", "0.5", "1", "2", "4", "8"])
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("images/s at batch 1 (2 CPU threads); labels = steps")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{r['model']}: quality vs speed ({r['samples']} prompts, guidance {r['guidance']})", fontsize=10)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    return out


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    print(plot(Path(sys.argv[1]), Path(sys.argv[2])))
