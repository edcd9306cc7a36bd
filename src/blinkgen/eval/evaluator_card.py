"""The evaluator's model card: README.md beside its weights, written from its config.json (how it
was trained, how well it retrieves its held-out images). Called by `contrastive.train_lit`."""
from __future__ import annotations

from pathlib import Path

from ..modelio import read_config


def write_model_card(folder) -> Path:
    """README.md beside the weights: what it is, how it was trained, how well it retrieves."""
    folder = Path(folder)
    cfg = read_config(folder)
    tr, r = cfg.get("training", {}), cfg.get("held_out_retrieval", {})
    pct = lambda v: f"{100 * v:.1f}%" if isinstance(v, (int, float)) else "n/a"  # noqa: E731
    lines = [
        "# blinkgen contrastive evaluator", "",
        "A small CNN image tower trained (LiT-style, text tower locked) to place a 64x64 image next to "
        "the MiniLM pooled embedding of its caption. blinkgen uses it for FD/KID/precision-recall "
        "features, image-prompt alignment and retrieval (`blinkgen eval`, `bench/bench_diffusion.py`) "
        "and as the first captioner (`blinkgen caption`). Not Inception, not CLIP: its FDs are "
        "comparable only with each other.", "",
        "## Training", "",
        f"- data: `{tr.get('data')}` at {tr.get('size')} px, {tr.get('train_images')} training images; "
        f"held out (never trained on): the `blinkgen.train.loop.split` held-out images (seed {tr.get('seed')}) "
        f"of `{tr.get('data')}` and of {', '.join(f'`{x}`' for x in tr.get('exclude_specs', [])) or 'no other spec'}",
        f"- {tr.get('steps')} steps x batch {tr.get('batch_size')}, AdamW lr {tr.get('lr')} (cosine), "
        f"symmetric InfoNCE with duplicate captions as positives, learned temperature "
        f"(final T = {1 / cfg.get('logit_scale', float('nan')):.4f})",
        f"- {tr.get('seconds')} s wall, {tr.get('cpu_seconds')} s CPU, {tr.get('threads')} thread(s), torch {tr.get('torch')}",
        f"- command: `{tr.get('command') or 'python -m blinkgen.eval.contrastive ...'}` "
        "(all options are recorded in config.json `training`)", "",
        "## Zero-shot retrieval on the held-out real images", "",
        f"{r.get('n_images')} held-out images of `{tr.get('data')}`, ranked against their {r.get('n_captions')} "
        "distinct primary captions.", "",
        "| | R@1 | R@5 |", "|---|---|---|",
        f"| image -> text | {pct(r.get('image_to_text_R@1'))} | {pct(r.get('image_to_text_R@5'))} |",
        f"| text -> image | {pct(r.get('text_to_image_R@1'))} | {pct(r.get('text_to_image_R@5'))} |",
        f"| chance | {pct(r.get('chance_R@1'))} | {pct(r.get('chance_R@5'))} |",
        f"| image -> text, emoji only (n={r.get('emoji_n')}) | {pct(r.get('emoji_image_to_text_R@1'))} | |",
        f"| image -> text, shapes only (n={r.get('shapes_n')}) | {pct(r.get('shapes_image_to_text_R@1'))} | |",
        *[f"| image -> text on `{spec}`'s held-out (n={o.get('n_images')}, {o.get('n_captions')} captions) "
          f"| {pct(o.get('image_to_text_R@1'))} | {pct(o.get('image_to_text_R@5'))} |"
          for spec, o in (cfg.get("held_out_retrieval_other_specs") or {}).items()],
        "", "## Files", "",
        "- `config.json`, `model.safetensors` (fp16): the image tower and temperature",
        "- `captions.txt`: the distinct primary captions of the training images (`blinkgen caption` candidates)",
        "- `caption_embeddings.safetensors`: their MiniLM embeddings, int8 with a per-row scale", "",
        "## Limits", "",
        "- 64 px, emoji and procedural shapes only; other images embed, but meaningfully only near that domain.",
        "- Trained for minutes on one CPU core: a coarse judge. Fine colour/count distinctions in shapes "
        "captions are checked exactly by `eval/shapes_check.py`, not by this model.", ""]
    (folder / "README.md").write_text("\n".join(lines), encoding="utf-8")
    return folder
