"""Train, save and load the contrastive evaluator (LiT with the text tower locked).

Why our own: FD/KID need an image feature space and alignment needs an image-text pair, and the
usual Inception/CLIP weights are neither offline-installable nor trained on icons and shapes.
A small CNN learns, with the symmetric InfoNCE loss and a learned temperature, to map an image
next to MiniLM's pooled embedding of its caption. Training is deterministic: one seed fixes the
initialisation, the data order and the caption drawn for each image at each step.

The real images held out by the training loop's split rule (`blinkgen.train.loop.split`, seed 0)
are kept out of training, for this data spec and for every spec in `exclude_specs` (the default
model's data), so the evaluator never saw the reference images it is later scored against.

Folder: config.json + model.safetensors (fp16) + captions.txt (the candidate captions for
`blinkgen caption`) + caption_embeddings.safetensors (their MiniLM embeddings, int8 with a
per-row scale, so captioning needs no 5000-caption encode on first use).
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from .. import __version__
from ..data.types import ImageCaptionSet
from ..errors import ModelLoadError
from ..modelio import load_into, read_config, read_tensors, state_dict_for_save, write_folder_atomic
from ..models.clip import CLIP_PRESETS, ContrastiveModel, ImageEncoderConfig, contrastive_loss
from ..textio import read_text

log = logging.getLogger(__name__)

EVALUATOR_DIR = Path(__file__).resolve().parent.parent / "weights" / "evaluator"
CAPTIONS_FILE = "captions.txt"
CAPTION_EMB_FILE = "caption_embeddings.safetensors"
INT8_MAX = 127.0


@dataclass
class LiTConfig:
    data: str = "datasets/emoji+shapes:3000"
    size: int = 64
    preset: str = "S"
    steps: int = 300
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup: int = 30
    seed: int = 0  # also the split seed: the same held-out images as a training run with this seed
    exclude_specs: list[str] = field(default_factory=list)  # their held-out images stay out too
    threads: int = 1

    def to_dict(self) -> dict:
        return asdict(self)


def held_out_split(data: ImageCaptionSet, seed: int = 0) -> tuple[ImageCaptionSet, ImageCaptionSet]:
    """(train, held-out) with the training loop's own rule and default fractions, so a generator
    trained on the same spec and seed held out exactly these images too."""
    from ..train.config import TrainConfig
    from ..train.loop import split

    return split(data, TrainConfig(seed=seed))


# ----------------------------------------------------------------------------- the loaded evaluator
class Evaluator:
    """The frozen pair: `embed_images` (uint8 (N,3,H,W) tensor or PIL images) and `embed_texts`,
    both -> float32 (N, 384) unit rows in the same space."""

    def __init__(self, model: ContrastiveModel, config: dict, folder: Path | None = None):
        self.model = model.eval().requires_grad_(False)
        self.config = config
        self.folder = folder

    @property
    def image_size(self) -> int:
        return self.model.cfg.image_size

    @torch.inference_mode()
    def embed_images(self, images, batch_size: int = 256) -> torch.Tensor:
        x = as_uint8_batch(images)
        return torch.cat([self.model.image(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]).float()

    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        return encode_pooled(texts)

    def weights_sha256(self) -> str | None:
        if self.folder is None:
            return None
        return hashlib.sha256((self.folder / "model.safetensors").read_bytes()).hexdigest()


def as_uint8_batch(images) -> torch.Tensor:
    """A list of PIL images / HWC arrays, or a (N, 3, H, W) uint8 tensor -> (N, 3, H, W) uint8.
    List items go through the one shared reader (data.image_io.read_image): any mode or bit
    depth, transparency on white, EXIF rotation, float arrays in [0, 1]."""
    if isinstance(images, torch.Tensor):
        assert images.dtype == torch.uint8 and images.dim() == 4, f"want (N,3,H,W) uint8, got {images.dtype} {tuple(images.shape)}"
        return images
    from ..data.image_io import read_image

    arrs = [np.asarray(read_image(im), dtype=np.uint8) for im in images]
    return torch.from_numpy(np.stack(arrs)).permute(0, 3, 1, 2).contiguous()


def encode_pooled(texts: list[str], batch_size: int = 128) -> torch.Tensor:
    """MiniLM pooled embeddings (N, 384), encoded in length-sorted batches (less padding), returned
    in input order. Batching never changes a row beyond float rounding (the mask hides padding)."""
    from ..text.encoder import shared_encoder

    enc = shared_encoder("cpu")
    order = sorted(range(len(texts)), key=lambda i: (len(texts[i]), texts[i]))
    out = torch.empty(len(texts), 384)
    for i in range(0, len(order), batch_size):
        idx = order[i:i + batch_size]
        out[idx] = enc.encode([texts[j] for j in idx], batch_size=batch_size).pooled.float()
    return out


def encode_pooled_cached(texts: list[str], cache_dir=None) -> torch.Tensor:
    """encode_pooled, kept in cache_dir/pooled-<sha>.safetensors (fp32) when cache_dir is set:
    the 25k training captions take ~5 CPU-minutes to encode, a retrain should not pay it twice."""
    if cache_dir is None:
        return encode_pooled(texts)
    path = Path(cache_dir) / f"pooled-{texts_sha(texts)[:16]}.safetensors"
    if path.is_file():
        return load_file(str(path))["pooled"]
    emb = encode_pooled(texts)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file({"pooled": emb.contiguous()}, str(tmp))
    os.replace(tmp, path)
    return emb


def texts_sha(texts: list[str]) -> str:
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode() + b"\0")
    return h.hexdigest()


def quantize_rows(x: torch.Tensor) -> dict[str, torch.Tensor]:
    scale = x.abs().amax(1, keepdim=True).clamp(min=1e-12) / INT8_MAX  # (N, 1)
    return {"q": torch.round(x / scale).to(torch.int8).contiguous(), "scale": scale.float().contiguous()}


def dequantize_rows(t: dict[str, torch.Tensor]) -> torch.Tensor:
    return F.normalize(t["q"].float() * t["scale"], dim=-1)


# ----------------------------------------------------------------------------- save / load
def save_evaluator(path, model: ContrastiveModel, extra: dict, captions: list[str] | None = None,
                   dtype: torch.dtype = torch.float16) -> Path:
    """Atomic folder write; captions (and their int8 embeddings) are the `caption` candidates."""
    config = {"family": "contrastive", "blinkgen_version": __version__, "image_encoder": model.cfg.to_dict(),
              "text_encoder": "all-MiniLM-L6-v2 pooled (locked)", "logit_scale": float(model.scale().detach()), **extra}
    files: dict = {"config.json": config, "model.safetensors": state_dict_for_save(model, dtype)}
    if captions is not None:
        config["captions_sha256"] = texts_sha(captions)
        files[CAPTION_EMB_FILE] = quantize_rows(encode_pooled(captions))
    path = write_folder_atomic(path, files)
    if captions is not None:
        tmp = path / f".{CAPTIONS_FILE}.tmp"
        tmp.write_text("".join(c.replace("\n", " ") + "\n" for c in captions), encoding="utf-8")
        os.replace(tmp, path / CAPTIONS_FILE)
    return path


_LOADED: dict[str, Evaluator] = {}


def load_evaluator(path=None) -> Evaluator:
    """The shipped evaluator (path None) or a folder written by `save_evaluator`; cached."""
    folder = Path(path) if path is not None else EVALUATOR_DIR
    key = str(folder.resolve())
    if key in _LOADED:
        return _LOADED[key]
    cfg = read_config(folder)
    if cfg.get("family") != "contrastive":
        raise ModelLoadError(f"{folder} holds a {cfg.get('family')!r} model, not a contrastive evaluator")
    try:
        model = ContrastiveModel(ImageEncoderConfig(**cfg["image_encoder"]))
    except (KeyError, TypeError) as e:
        raise ModelLoadError(f"{folder}/config.json has no valid 'image_encoder' section: {e}") from None
    load_into(model, read_tensors(folder / "model.safetensors"), str(folder))
    _LOADED[key] = ev = Evaluator(model.float(), cfg, folder)
    return ev


def read_captions(folder) -> list[str]:
    f = Path(folder) / CAPTIONS_FILE
    if not f.is_file():
        raise ModelLoadError(f"{f} is missing: the evaluator folder ships its candidate captions there")
    return [line for line in read_text(f, "captions file").split("\n") if line.strip()]


def candidate_embeddings(ev: Evaluator, captions: list[str]) -> torch.Tensor:
    """The shipped int8 embeddings when `captions` are the shipped list, else a fresh encode."""
    f = ev.folder / CAPTION_EMB_FILE if ev.folder is not None else None
    if f is not None and f.is_file() and ev.config.get("captions_sha256") == texts_sha(captions):
        return dequantize_rows(load_file(str(f)))
    return encode_pooled(captions)


# ----------------------------------------------------------------------------- retrieval
def retrieval_hits(image_emb: torch.Tensor, text_emb: torch.Tensor, targets, k: int) -> torch.Tensor:
    """(N,) bool: is image i's own text (row targets[i] of text_emb, a list of DISTINCT texts)
    among its k most similar? Ties count against the image, so collapse scores 0."""
    sim = F.normalize(image_emb.double(), dim=-1) @ F.normalize(text_emb.double(), dim=-1).T  # (N, T)
    t = torch.as_tensor(targets)
    own = sim[torch.arange(len(t)), t]
    rivals = (sim >= own[:, None]).sum(1) - 1
    return rivals < k


def retrieval_at_k(image_emb: torch.Tensor, text_emb: torch.Tensor, targets, k: int) -> float:
    """Share of images whose own text is among the k most similar (`retrieval_hits`)."""
    return float(retrieval_hits(image_emb, text_emb, targets, k).double().mean())


def zero_shot_report(ev: Evaluator, held: ImageCaptionSet) -> dict:
    """R@1 / R@5 of held-out real images against the distinct primary captions of the held-out
    set (image -> text), and text -> image; per source (emoji / shapes) too."""
    prim = [c[0] for c in held.captions]
    uniq = sorted(set(prim))
    tix = [uniq.index(p) for p in prim]
    img, txt = ev.embed_images(held.images), ev.embed_texts(uniq)
    out = {"n_images": len(held), "n_captions": len(uniq),
           "image_to_text_R@1": retrieval_at_k(img, txt, tix, 1), "image_to_text_R@5": retrieval_at_k(img, txt, tix, 5),
           "chance_R@1": 1 / len(uniq), "chance_R@5": min(1.0, 5 / len(uniq))}
    # text -> image: a caption hits if any image carrying it is in its top k
    sim = F.normalize(txt.double(), dim=-1) @ F.normalize(img.double(), dim=-1).T  # (T, N)
    owner = torch.tensor(tix)
    for k in (1, 5):
        top = sim.topk(min(k, len(held)), dim=1).indices
        out[f"text_to_image_R@{k}"] = float((owner[top] == torch.arange(len(uniq))[:, None]).any(1).double().mean())
    for name, keep in (("shapes", [n.startswith("shapes") for n in held.names]),
                       ("emoji", [not n.startswith("shapes") for n in held.names])):
        idx = [i for i, k in enumerate(keep) if k]
        if idx:
            sub = sorted({tix[i] for i in idx})
            remap = {t: j for j, t in enumerate(sub)}
            out[f"{name}_image_to_text_R@1"] = retrieval_at_k(img[idx], txt[sub], [remap[tix[i]] for i in idx], 1)
            out[f"{name}_n"] = len(idx)
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in out.items()}


# ----------------------------------------------------------------------------- training
def train_lit(cfg: LiTConfig, out, data: ImageCaptionSet | None = None, progress=print,
              cache_dir=None) -> Path:
    """Train the image tower against locked MiniLM embeddings; write the evaluator folder.
    cache_dir: where the caption embeddings are kept between runs (None: not kept)."""
    from ..data.registry import load_dataset
    from ..train.schedule import lr_at

    torch.set_num_threads(cfg.threads)
    t_start = time.time()
    data = data if data is not None else load_dataset(cfg.data, cfg.size, cfg.seed)
    train, held = held_out_split(data, cfg.seed)
    excluded = set(held.names)
    other_held = {spec: held_out_split(load_dataset(spec, cfg.size, cfg.seed), cfg.seed)[1] for spec in cfg.exclude_specs}
    for h in other_held.values():
        excluded |= set(h.names)
    keep = [i for i, n in enumerate(train.names) if n not in excluded]
    train = train.subset(keep)
    progress(f"data: {len(data)} images, train {len(train)}, held out {len(data) - len(train)} "
             f"({len(held)} of this spec's split + other specs' held-out)")

    texts = sorted({c for cs in train.captions for c in cs})
    tid = {t: i for i, t in enumerate(texts)}
    t0 = time.time()
    text_emb = encode_pooled_cached(texts, cache_dir)  # (T, 384), locked: computed once
    progress(f"encoded {len(texts)} captions in {time.time() - t0:.0f}s")
    cap_ids = [[tid[c] for c in cs] for cs in train.captions]

    torch.manual_seed(cfg.seed)
    model = ContrastiveModel(CLIP_PRESETS[cfg.preset])
    decay = [p for n, p in model.named_parameters() if p.dim() > 1]
    no_decay = [p for n, p in model.named_parameters() if p.dim() <= 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
    g = torch.Generator().manual_seed(cfg.seed + 1)
    perm, pos, losses = torch.randperm(len(train), generator=g), 0, []
    model.train()
    t0 = time.time()
    for step in range(cfg.steps):
        if pos + cfg.batch_size > len(perm):
            perm, pos = torch.randperm(len(train), generator=g), 0
        idx = perm[pos:pos + cfg.batch_size]
        pos += cfg.batch_size
        draws = torch.rand(len(idx), generator=g)
        ids = torch.tensor([cap_ids[i][int(u * len(cap_ids[i]))] for i, u in zip(idx.tolist(), draws.tolist())])
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg.lr, cfg.warmup, cfg.steps, 0.0)  # cosine to zero
        loss = contrastive_loss(model.logits(train.images[idx], text_emb[ids]), ids)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if step % 20 == 0 or step == cfg.steps - 1:
            progress(f"step {step}/{cfg.steps} loss {loss.item():.3f} T={1 / model.scale().item():.4f} "
                     f"{(time.time() - t0) / (step + 1):.2f}s/step")
    model.eval()
    with torch.no_grad():  # score the weights as shipped (fp16), not the fp32 ones of training
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.copy_(t.half().float())
    ev = Evaluator(model, {})
    report = zero_shot_report(ev, held)
    progress(f"held-out zero-shot retrieval: {json.dumps(report)}")
    others = {spec: zero_shot_report(ev, h) for spec, h in other_held.items()}
    extra = {"held_out_retrieval_other_specs": others,
             "training": {**cfg.to_dict(), "train_images": len(train), "seconds": round(time.time() - t_start),
                          "cpu_seconds": round(time.process_time()),
                          "final_loss": round(sum(losses[-20:]) / len(losses[-20:]), 4),
                          "split_rule": "blinkgen.train.loop.split(data, TrainConfig(seed)) held-out, "
                                        "for data and every exclude_specs entry",
                          "torch": torch.__version__},
             "held_out_retrieval": report}
    captions = sorted({cs[0] for cs in train.captions})
    folder = save_evaluator(out, model, extra, captions)
    from .evaluator_card import write_model_card

    write_model_card(folder)
    return folder


def main(argv=None) -> None:
    """python -m blinkgen.eval.contrastive --out DIR [--steps N] ... (the shipped run's command is
    recorded in the evaluator's config.json)."""
    import argparse

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--out", default=str(EVALUATOR_DIR))
    for f in LiTConfig.__dataclass_fields__.values():
        if f.name != "exclude_specs":
            ap.add_argument("--" + f.name.replace("_", "-"), dest=f.name, type=type(getattr(LiTConfig(), f.name)),
                            default=getattr(LiTConfig(), f.name))
    ap.add_argument("--exclude", action="append", default=[], help="another spec whose held-out images stay out")
    ap.add_argument("--cache-dir", default=None, help="keep the caption embeddings here between runs")
    a = vars(ap.parse_args(argv))
    out, exclude, cache = a.pop("out"), a.pop("exclude"), a.pop("cache_dir")
    t0 = time.time()
    print(train_lit(LiTConfig(**a, exclude_specs=exclude), out, cache_dir=cache,
                    progress=lambda m: print(f"[{time.time() - t0:6.0f}s] {m}", flush=True)))


if __name__ == "__main__":
    main()
