"""The generative captioner: image -> blinkgen's image encoder features -> a small Llama writes a
caption (models/captioner.py, decoded greedily or by beam search with a KV cache,
sampling/text_decode.py). `blinkgen caption IMAGE --generate` uses the shipped one; retrieval
over candidate captions stays in eval/caption.py.

The image features are the contrastive evaluator's (eval/contrastive.py): its image tower, frozen
and shared, gives the text-aligned embedding and the 4x4 map; the captioner adds its own small
convolutional stem on the pixels (models/captioner.py says why). The captioner folder holds the
decoder, the stem, the projections and the word vocabulary, and records the sha256 of the
evaluator weights it was trained on (a captioner is refused with any other evaluator: its
features would mean something else).

Folder: config.json ({"family": "captioner", "captioner": CaptionerConfig, "features",
"image_encoder": {"sha256"}, "decode": {"beams", "max_len"}, "training"}) + model.safetensors
(the tied output head stored once) + vocab.json ({"tokens": [...]}).
"""
from __future__ import annotations

from pathlib import Path

import torch

from .. import __version__
from ..checks import as_int
from ..data.image_io import read_image, to_rgb_square
from ..errors import ModelLoadError
from ..modelio import load_into, read_config, read_tensors, state_dict_for_save, write_folder_atomic
from ..models.captioner import Captioner, CaptionerConfig, flatten_features
from ..sampling.text_decode import beam_decode, greedy_decode
from ..text.vocab import WordVocab
from .contrastive import Evaluator, as_uint8_batch, load_evaluator

CAPTIONER_DIR = Path(__file__).resolve().parent.parent / "weights" / "captioner"
FEATURES = ("embedding", "stage-1")  # the evaluator's embedding and its 4x4 map (models/captioner.py)
DEFAULT_BEAMS = 3
TIED_HEAD = "llama.lm_head.weight"


def feature_shapes(ev: Evaluator, names=FEATURES) -> tuple[list[int], list[int]]:
    """(channels, tokens) of each feature group for this evaluator's image tower."""
    c = ev.model.cfg
    dims, tokens = [], []
    for n in names:
        if n == "embedding":
            dims.append(c.embed_dim)
            tokens.append(1)
        else:
            k = int(n.split("-")[1])  # stage -k: widths[-k] channels at final_size * 2^(k-1) per side
            dims.append(c.widths[-k])
            tokens.append((c.final_size * 2 ** (k - 1)) ** 2)
    return dims, tokens


@torch.inference_mode()
def image_features(ev: Evaluator, images, names=FEATURES, batch_size: int = 256) -> list[torch.Tensor]:
    """uint8 images (N, 3, H, W) (or PIL images) -> one (N, tokens_g, dims_g) fp32 tensor per group."""
    x = as_uint8_batch(images)
    enc = ev.model.image
    groups: list[list[torch.Tensor]] = [[] for _ in names]
    for i in range(0, len(x), batch_size):
        maps = enc.stage_maps(x[i:i + batch_size])
        for g, n in enumerate(names):
            groups[g].append(enc.head(maps[-1]) if n == "embedding" else maps[-int(n.split("-")[1])])
    return flatten_features([torch.cat(g).float() for g in groups])


class CaptionWriter:
    """A loaded captioner: `write(images)` -> one caption per image."""

    def __init__(self, model: Captioner, vocab: WordVocab, evaluator: Evaluator, config: dict, folder=None):
        self.model = model.eval().requires_grad_(False)
        self.vocab, self.evaluator, self.config, self.folder = vocab, evaluator, config, folder
        self.features = tuple(config.get("features", FEATURES))

    def write(self, images, beams: int | None = None, max_len: int | None = None) -> list[str]:
        """Pictures -> one caption each. images: a uint8 (N, 3, H, W) tensor, or a list of anything
        the one image reader takes (paths, bytes, PIL images, arrays: data/image_io.py, which
        refuses unreadable files in one line), squared as training squares them. beams: beam width
        (1 = greedy; default the folder's), max_len: most words."""
        dec = self.config.get("decode", {})
        beams = as_int(dec.get("beams", DEFAULT_BEAMS) if beams is None else beams, "beams", 1, 16)
        S = self.evaluator.image_size
        if not torch.is_tensor(images):
            images = [to_rgb_square(read_image(im), S) for im in images]
        x = as_uint8_batch(images)
        if x.shape[-1] != S or x.shape[-2] != S:
            x = _resize(x, S)
        return self.write_features(image_features(self.evaluator, x, self.features), x, beams, max_len)

    @torch.inference_mode()
    def write_features(self, feats: list[torch.Tensor], images: torch.Tensor, beams: int = 1,
                       max_len: int | None = None) -> list[str]:
        """Frozen feature groups (`image_features`) and the uint8 images (N, 3, S, S) -> captions of
        at most max_len words (default and most: the model's max_text)."""
        max_len = min(int(max_len or self.model.cfg.max_text), self.model.cfg.max_text) + 1  # words + <eos>
        prefix = self.model.prefix(feats, images)  # (N, P, D)
        v = self.vocab
        ids = greedy_decode(self.model.llama, prefix, v.bos, v.eos, max_len) if beams == 1 else \
            beam_decode(self.model.llama, prefix, v.bos, v.eos, max_len, beams)
        return [v.decode(row) for row in ids]


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    import torch.nn.functional as F

    y = F.interpolate(x.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return y.round().clamp(0, 255).to(torch.uint8)


def save_captioner(path, model: Captioner, vocab: WordVocab, evaluator: Evaluator, extra: dict | None = None,
                   dtype: torch.dtype | None = None, features=FEATURES) -> Path:
    sd = state_dict_for_save(model, dtype)
    sd.pop(TIED_HEAD, None)  # tied to the word embedding: stored once
    config = {"family": "captioner", "blinkgen_version": __version__, "captioner": model.cfg.to_dict(),
              "features": list(features), "decode": {"beams": DEFAULT_BEAMS},
              "image_encoder": {"kind": "contrastive evaluator image tower (frozen)",
                                "sha256": evaluator.weights_sha256()}, **(extra or {})}
    return write_folder_atomic(path, {"config.json": config, "model.safetensors": sd,
                                      "vocab.json": {"tokens": vocab.to_list()}})


def load_captioner(path=None, evaluator=None) -> CaptionWriter:
    """The shipped captioner (path None) or a folder written by `save_captioner`, with the
    evaluator it was trained on (None: the shipped one). ModelLoadError if the folder is not a
    captioner, or the evaluator is not the one its features came from."""
    folder = Path(path) if path is not None else CAPTIONER_DIR
    if path is None and not (folder / "config.json").is_file():
        raise ModelLoadError("this blinkgen has no shipped captioner; train one with "
                             "`blinkgen train --family captioner` and pass its folder")
    cfg = read_config(folder)
    if cfg.get("family") != "captioner":
        raise ModelLoadError(f"{folder} holds a {cfg.get('family')!r} model, not a captioner")
    ev = evaluator if isinstance(evaluator, Evaluator) else load_evaluator(evaluator)
    want = (cfg.get("image_encoder") or {}).get("sha256")
    if want and ev.weights_sha256() and want != ev.weights_sha256():
        raise ModelLoadError(f"captioner {folder} was trained on the features of evaluator {want[:12]}, "
                             f"not of {ev.weights_sha256()[:12]} ({ev.folder})")
    try:
        ccfg = CaptionerConfig(**cfg["captioner"])
        vocab = WordVocab(read_config_json(folder / "vocab.json")["tokens"])
    except (KeyError, TypeError, ValueError) as e:
        raise ModelLoadError(f"{folder} is not a complete captioner folder: {e}") from None
    model = Captioner(ccfg)
    tensors = read_tensors(folder / "model.safetensors")
    if TIED_HEAD not in tensors:
        tensors = {**tensors, TIED_HEAD: tensors["llama.model.embed_tokens.weight"]}
    load_into(model, tensors, str(folder))
    return CaptionWriter(model.float(), vocab, ev, cfg, folder)


def read_config_json(path: Path) -> dict:
    import json

    if not path.is_file():
        raise ModelLoadError(f"{path} is missing")
    try:
        return json.loads(path.read_text())
    except ValueError as e:
        raise ModelLoadError(f"{path} is corrupt: {e}") from None

