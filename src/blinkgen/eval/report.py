"""The human-readable report of one `blinkgen eval` run (report.md): a table of the generated
images' scores beside the real held-out ceiling, and the warnings a reader must see (the
generator or the evaluator has seen the reference images). Input: the dict evaluate() returns."""
from __future__ import annotations

import json

from .evaluate import PR_K


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def report_markdown(r: dict) -> str:
    m, c, s = r["metrics"], r["ceiling"], r["settings"]
    same = m.get("real_same_prompts") or {}
    lines = [f"# Evaluation of `{r['model']}` on `{r['data']}`", "",
             f"{r['samples']} images, seeds {r['seed']}..{r['seed'] + r['samples'] - 1}, "
             f"{s['sampler']} {s['steps']} steps, guidance {s['guidance']}. Prompts: {r['prompts_source']}.", "",
             "| metric | generated | real held-out (ceiling) |", "|---|---|---|",
             f"| FD (evaluator space, lower is better) | {_fmt(m['fd'])} | {_fmt(c.get('real_fd_between_halves'))} "
             "(two halves of the real set) |",
             f"| KID | {_fmt(m.get('kid'))} ± {_fmt(m.get('kid_std'))} | |",
             f"| precision / recall (k={PR_K}) | {_fmt(m.get('precision'))} / {_fmt(m.get('recall'))} | |",
             f"| alignment (cosine) | {_fmt(m['alignment'])} | {_fmt(c['real_alignment'])} |",
             f"| retrieval R@1 among the run's prompts | {_fmt(m['retrieval_R@1'])} (chance "
             f"{_fmt(m['retrieval_chance_R@1'])}) | {_fmt(same.get('retrieval_R@1'))} (n={same.get('n')}) |",
             f"| retrieval R@5 among the run's prompts | {_fmt(m['retrieval_R@5'])} | {_fmt(same.get('retrieval_R@5'))} |",
             *([f"| the same real images through the model's decoder: R@1 / R@5 (what drawing them exactly "
                f"scores) | | {_fmt(dec['retrieval_R@1'])} / {_fmt(dec['retrieval_R@5'])} |"]
               if (dec := m.get("real_same_prompts_through_decoder")) else []),
             f"| real held-out vs all {c['n_real']} of their captions: R@1 / R@5 | | "
             f"{_fmt(c['real_retrieval_R@1'])} / {_fmt(c['real_retrieval_R@5'])} |"]
    if "nn" in m:
        nn = m["nn"]
        lines.append(f"| nearest-neighbour check: own emoji among the {nn['k']} nearest ({nn['side']}px) | "
                     f"{nn['hits']} of {nn['n']} | |")
    cap = m.get("caption") or {}
    if "exact" in cap:
        lines.append(f"| captioned image = prompt (exact; captioner) | {_fmt(cap['exact'])} | |")
        lines.append(f"| caption-prompt similarity (MiniLM cosine) | {_fmt(cap['similarity'])} | |")
        if "shapes" in cap:
            lines.append(f"| caption reads back the prompt's scene (shapes, n={cap['shapes']['n']}) | "
                         f"{_fmt(cap['shapes']['same'])} | |")
    if "shapes" in m:
        sh = m["shapes"]
        lines.append(f"| shapes overall (n={sh['n_overall']}) | {_fmt(sh['overall'])} | |")
        for a in ("colour", "shape", "count", "size", "relation", "background"):
            lines.append(f"| shapes {a} (n={sh[f'n_{a}']}) | {_fmt(sh[a])} | |")
    seen = r.get("reference_seen_by_generator") or {}
    if seen.get("seen") != 0:
        lines += ["", f"**Warning:** the generator's training saw {seen.get('seen', 'an unknown number')} of the "
                  f"{seen.get('n_reference')} held-out reference images (its lineage: "
                  + "; ".join(f"{x['role']} on {x['data']}: {x['seen']}" for x in seen.get("runs", []))
                  + "), so FD, R@1 and alignment are flattered. Score it on the split of the spec it trained on."]
    if r.get("reference_unseen_by_evaluator") is not True:
        lines += ["", "**Warning:** the evaluator's training did not exclude this data's held-out split, so it "
                  "has probably seen these reference images (the real-image ceiling is flattered)."]
    lines += ["", "FD/KID use blinkgen's own contrastive image encoder, not Inception-v3: compare runs "
              "only with each other, at the same sample count and evaluator "
              f"(sha256 {str(r['evaluator']['sha256'])[:12]}).", "",
              f"Versions: {json.dumps(r['versions'], sort_keys=True)}", "", "![samples](grid.png)", ""]
    return "\n".join(lines)
