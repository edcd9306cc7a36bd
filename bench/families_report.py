"""The families bench's comparisons and its Markdown report (bench_families.py writes the JSON; this
renders it): SJD against plain decoding, the masked mode against plain decoding, the one-pass
families (GAN, VAE) against the diffusion default, and the tables of every row and check."""
from __future__ import annotations

import importlib.util
from pathlib import Path

WITHIN = 0.05  # the "speculative matches plain" tolerance the roadmap names (5%)


def _family_checks():
    spec = importlib.util.spec_from_file_location("blinkgen_family_checks", Path(__file__).resolve().parent / "family_checks.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _rel(a: float, b: float) -> float:
    """Relative difference |a - b| / |b|."""
    return abs(a - b) / max(abs(b), 1e-12)


def compare_sjd(rows: list[dict]) -> list[dict]:
    """Each SJD row against plain cached decoding, next to the seed-to-seed noise of plain."""
    by = {r["rung"]: r for r in rows if r["family"] == "ar"}
    plain, noise = by.get("cached"), by.get("cached, other seeds")
    out = []
    for name, r in by.items():
        if not name.startswith("sjd") or plain is None:
            continue
        q, p = r["quality"], plain["quality"]
        c = {"rung": name, "fd_sjd": q["fd"], "fd_plain": p["fd"], "fd_rel_diff": _rel(q["fd"], p["fd"]),
             "alignment_sjd": q["alignment"], "alignment_plain": p["alignment"],
             "alignment_rel_diff": _rel(q["alignment"], p["alignment"])}
        c["within_5pct"] = c["fd_rel_diff"] <= WITHIN and c["alignment_rel_diff"] <= WITHIN
        if noise is not None:
            c["fd_rel_diff_plain_vs_other_seeds"] = _rel(noise["quality"]["fd"], p["fd"])
            c["alignment_rel_diff_plain_vs_other_seeds"] = _rel(noise["quality"]["alignment"], p["alignment"])
        if "batch1" in r and "batch1" in plain:
            c["speedup_batch1"] = r["batch1"]["images_per_s"] / plain["batch1"]["images_per_s"]
        out.append(c)
    return out


def compare_onepass(rows: list[dict], batch: int) -> list[dict]:
    """Each GAN / VAE row's images/s over the diffusion default row's, at batch 1 and batch N."""
    base = next((r for r in rows if r["family"] == "diffusion" and r["rung"] == "default"), None)
    out = []
    for r in rows:
        if r["family"] not in ("gan", "vae") or base is None:
            continue
        c = {"family": r["family"], "rung": r["rung"],
             f"speedup_batch{batch}": r[f"batch{batch}"]["images_per_s"] / base[f"batch{batch}"]["images_per_s"]}
        if "batch1" in r and "batch1" in base:
            c["speedup_batch1"] = r["batch1"]["images_per_s"] / base["batch1"]["images_per_s"]
            c["cpu_speedup_batch1"] = base["batch1"]["cpu_s_per_image"] / r["batch1"]["cpu_s_per_image"]
        out.append(c)
    return out


def compare_parallel(rows: list[dict], batch: int) -> list[dict]:
    """Each masked-mode row against plain cached decoding of the causal model: speed-ups at batch 1
    and at the batch size, and the relative quality differences."""
    plain = next((r for r in rows if r["family"] == "ar" and r["rung"] == "cached"), None)
    out = []
    for r in rows:
        if not r["rung"].startswith("maskgit") or plain is None:
            continue
        q, p = r["quality"], plain["quality"]
        c = {"rung": r["rung"], "fd": q["fd"], "fd_plain": p["fd"], "fd_rel_diff": _rel(q["fd"], p["fd"]),
             "alignment": q["alignment"], "alignment_plain": p["alignment"],
             "alignment_rel_diff": _rel(q["alignment"], p["alignment"]),
             f"speedup_batch{batch}": r[f"batch{batch}"]["images_per_s"] / plain[f"batch{batch}"]["images_per_s"]}
        if "batch1" in r and "batch1" in plain:
            c["speedup_batch1"] = r["batch1"]["images_per_s"] / plain["batch1"]["images_per_s"]
            c["cpu_speedup_batch1"] = plain["batch1"]["cpu_s_per_image"] / r["batch1"]["cpu_s_per_image"]
        out.append(c)
    return out


def render(r: dict) -> str:
    """A results JSON as Markdown tables."""
    b = r["batch"]
    lines = [f"Data `{r['data']}` ({r['samples']} prompts from the held-out captions, seeds {r['seed']}..), "
             f"{r['threads']} threads, load average {r['machine']['load_average_at_start'][0]} -> "
             f"{r['machine']['load_average_at_end'][0]}.", "",
             f"| family | rung | sampler / steps / guidance | img/s b1 | p50 / p95 ms b1 | img/s b{b} | CPU s/img b{b} | "
             "FD | KID | align | R@1 | shapes | notes |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for x in r["rows"]:
        q, one, many, s = x["quality"], x.get("batch1"), x[f"batch{b}"], x["settings"]
        sh = (q.get("shapes") or {}).get("overall")
        notes = []
        if "sjd_tokens_per_pass" in x:
            notes.append(f"{x['sjd_tokens_per_pass']:.2f} tokens/pass")
        if "network_calls_per_image" in x:
            notes.append(f"{x['network_calls_per_image']:.1f} calls/img")
        b1 = (f"{one['images_per_s']:.2f} | {one['p50_s'] * 1e3:.0f} / {one['p95_s'] * 1e3:.0f}" if one else " | ")
        lines.append(f"| {x['family']} | {x['rung']} | {s['sampler']} / {s['steps']} / {s['guidance']:g} | {b1} | "
                     f"{many['images_per_s']:.2f} | {many['cpu_s_per_image']:.3f} | {q['fd']:.3f} | "
                     f"{q.get('kid', float('nan')):.1e} | {q['alignment']:.3f} | {q['retrieval_R@1']:.3f} | "
                     f"{'' if sh is None else f'{sh:.3f}'} | {', '.join(notes)} |")
    c = r["ceiling"]
    lines += ["", f"Real held-out images (the ceiling): alignment {c['real_alignment']:.3f}, "
              f"R@1 {c['real_retrieval_R@1']:.3f} over their own captions (n = {c['n_real']})"
              + (f"; FD between two halves {c['real_fd_between_halves']:.3f}" if c.get("real_fd_between_halves") else "")
              + "."]
    if r.get("sjd_vs_plain"):
        lines += ["", "| SJD rung | speed-up b1 | FD sjd / plain (rel.) | align sjd / plain (rel.) | within 5% | "
                  "plain vs other seeds: FD / align (rel.) |", "|---|---|---|---|---|---|"]
        for x in r["sjd_vs_plain"]:
            noise = (f"{x['fd_rel_diff_plain_vs_other_seeds']:.1%} / {x['alignment_rel_diff_plain_vs_other_seeds']:.1%}"
                     if "fd_rel_diff_plain_vs_other_seeds" in x else "")
            sp = f"{x['speedup_batch1']:.2f}x" if "speedup_batch1" in x else ""
            lines.append(f"| {x['rung']} | {sp} | {x['fd_sjd']:.3f} / {x['fd_plain']:.3f} ({x['fd_rel_diff']:.1%}) | "
                         f"{x['alignment_sjd']:.3f} / {x['alignment_plain']:.3f} ({x['alignment_rel_diff']:.1%}) | "
                         f"{'yes' if x['within_5pct'] else 'no'} | {noise} |")
    sh_rows = [x for x in r["rows"] if "shapes_eval" in x]
    if sh_rows:
        attrs = ["overall", "colour", "shape", "count", "size", "relation", "background"]
        lines += ["", f"Shapes compositional accuracy on `{r['shapes_prompts']}` "
                  f"({sh_rows[0]['shapes_eval'].get('n_colour', '?')} prompts with a colour):", "",
                  "| family | rung | " + " | ".join(attrs) + " |", "|---|---|" + "---|" * len(attrs)]
        for x in sh_rows:
            e = x["shapes_eval"]
            lines.append(f"| {x['family']} | {x['rung']} | " + " | ".join(
                "" if e.get(a) is None else f"{e[a]:.3f}" for a in attrs) + " |")
    if r.get("parallel_vs_plain"):
        lines += ["", f"| masked-mode rung | speed-up b1 (wall / CPU) | speed-up b{b} | FD masked / plain (rel.) | "
                  "align masked / plain (rel.) |", "|---|---|---|---|---|"]
        for x in r["parallel_vs_plain"]:
            sp = f"{x['speedup_batch1']:.2f}x / {x['cpu_speedup_batch1']:.2f}x" if "speedup_batch1" in x else ""
            lines.append(f"| {x['rung']} | {sp} | {x[f'speedup_batch{b}']:.2f}x | "
                         f"{x['fd']:.3f} / {x['fd_plain']:.3f} ({x['fd_rel_diff']:.1%}) | "
                         f"{x['alignment']:.3f} / {x['alignment_plain']:.3f} ({x['alignment_rel_diff']:.1%}) |")
    if r.get("onepass_vs_diffusion"):
        lines += ["", f"| one-pass row | speed-up over diffusion b1 (wall / CPU) | speed-up b{b} |", "|---|---|---|"]
        for x in r["onepass_vs_diffusion"]:
            sp = f"{x['speedup_batch1']:.1f}x / {x['cpu_speedup_batch1']:.1f}x" if "speedup_batch1" in x else ""
            lines.append(f"| {x['family']} {x['rung']} | {sp} | {x[f'speedup_batch{b}']:.1f}x |")
    lines += _family_checks().render_checks(r["rows"])
    return "\n".join(lines) + "\n"
