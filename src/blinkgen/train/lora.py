"""LoRA adapters through the `peft` library: wrap a generator's network for fine-tuning, save
the adapter in peft's format, and apply a saved one (at a scale) for generation or merging.

Why peft: it is the ecosystem's format and code for low-rank adapters (Hu et al. 2021, "LoRA:
Low-Rank Adaptation of Large Language Models"): W' = W + (alpha / r) * scale * B @ A, with A
(r, in) and B (out, r), B zero at the start so training starts from the base model exactly.

An adapter folder:
    adapter_model.safetensors   peft's weights (keys "base_model.model.<module>.lora_A.weight", ...)
    adapter_config.json         peft's LoraConfig (rank, alpha, target modules)
    config.json                 blinkgen's: {"family": "lora", "base": {"family", "name", "path",
                                "weights_sha256"}, "network": "denoiser" | "ar", "rank", "alpha",
                                "training": {...}}
`weights_sha256` is the hash of every weights file of the base model folder (`weights_sha256`
below): an adapter is applied only to the model it was trained on, and refused with one line
naming both hashes otherwise. The adapter has a hash too (`adapter_sha256`, train/lora_hash.py:
its weights and the adapter_config.json fields that change its output): a PNG drawn with an
adapter records it as `lora_hash`, so a replay can say that the adapter at that path has changed
since (trained again into the same folder, or its config edited).
A fine-tuning run folder holds its adapter in model/; every function here that takes an adapter
path accepts the run folder too.

Where adapters attach: the attention and MLP projections of the generator network (nn.Linear
only) -- a denoiser's self- and cross-attention q/kv/out and MLP (DiT, U-ViT, the U-Net's
attention blocks), the AR family's Llama q/k/v/o and gate/up/down projections. The rest (embeddings,
adaLN modulation, the autoencoder or tokenizer, the text encoder) stays the base model's.
"""
from __future__ import annotations

import copy
import json
import re
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from .. import __version__
from ..errors import ModelLoadError, UserInputError
from ..modelio import weights_hash
from ..outputs import replacing_folder
from .lora_hash import adapter_sha256  # the adapter's identity (lora_hash.py), also re-exported here

ADAPTER_WEIGHTS = "adapter_model.safetensors"  # peft's names
ADAPTER_CONFIG = "adapter_config.json"
CONFIG = "config.json"  # blinkgen's: names the base model
FAMILY = "lora"
DEFAULT_RANK = 8  # see bench/RESULTS.md "LoRA": rank 8 learns a 10-picture concept in minutes
MAX_RANK = 256
MAX_SCALE = 4.0  # |scale| above ~2 only amplifies artefacts; 4 leaves room to explore

# Which nn.Linear modules get an adapter, by network kind: a regex fully matching module names.
TARGETS: dict[str, str] = {
    # denoisers (models/denoisers.py): self/cross-attention projections and the MLP, in DiT and
    # U-ViT blocks ("attn.q", "cross.kv", "mlp.0") and the U-Net's attention blocks ("qkv", "self_out")
    "denoiser": r"(.*\.)?(attn|cross)\.(q|kv|out)|(.*\.)?(qkv|self_out|q|kv|cross_out)|(.*\.)?mlp\.(0|2)",
    # the AR family's ARTextToImage: its Llama's attention and SwiGLU projections
    "ar": r"llama\.model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)",
}


def weights_sha256(folder) -> str:
    """The identity of a base model's weights, whatever it is called or where it lives:
    modelio.weights_hash (the same hash a PNG records as model_hash). ModelLoadError for a folder
    without weights."""
    folder = Path(folder)
    if not any(p.is_file() for p in folder.rglob("*.safetensors")):
        raise ModelLoadError(f"{folder} holds no weights (*.safetensors)")
    return weights_hash(folder)


def target_modules(network: nn.Module, kind: str) -> list[str]:
    """Names of the nn.Linear modules of `network` that get adapters (TARGETS[kind]), in module
    order. ValueError if there are none (an architecture this table does not know)."""
    pattern = re.compile(TARGETS[kind])
    names = [n for n, m in network.named_modules() if isinstance(m, nn.Linear) and pattern.fullmatch(n)]
    if not names:
        raise ValueError(f"no {kind} projection matches {TARGETS[kind]!r} in {type(network).__name__}")
    return names


def wrap(network: nn.Module, kind: str, rank: int = DEFAULT_RANK, alpha: float | None = None):
    """A peft LoRA model around `network` (modified in place: peft swaps its target Linears):
    only the adapters' A and B matrices require gradients. alpha None = rank (scale 1).
    The A matrices are drawn from torch's global generator (seed it first for a repeatable run)."""
    from peft import LoraConfig, get_peft_model

    if isinstance(rank, bool) or not isinstance(rank, int) or not 1 <= rank <= MAX_RANK:
        raise UserInputError(f"rank must be an integer between 1 and {MAX_RANK}, got {rank!r}")
    cfg = LoraConfig(r=rank, lora_alpha=float(alpha or rank), lora_dropout=0.0, bias="none",
                     target_modules=target_modules(network, kind))
    return get_peft_model(network, cfg)


def trainable(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def save_adapter(peft_model, folder, base: dict, kind: str, extra: dict | None = None) -> Path:
    """Write peft's two files and blinkgen's config.json into `folder`, atomically (a temp folder
    renamed into place: outputs.replacing_folder). base: {"family", "name", "path",
    "weights_sha256"} of the base model. Raises what peft's save_pretrained raises, OSError if
    writing fails; a failed write leaves an existing `folder` as it was."""
    folder = Path(folder)
    with replacing_folder(folder) as tmp:
        peft_model.save_pretrained(str(tmp), safe_serialization=True)
        (tmp / "README.md").unlink(missing_ok=True)  # peft's model-card stub; config.json says it all
        lcfg = peft_model.peft_config["default"]
        config = {"family": FAMILY, "blinkgen_version": __version__, "base": base, "network": kind,
                  "rank": int(lcfg.r), "alpha": float(lcfg.lora_alpha), **(extra or {})}
        (tmp / CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True))
    return folder


@dataclass(frozen=True)
class Adapter:
    """A saved adapter, read and checked: folder (the adapter folder itself), config (blinkgen's
    config.json), kind ("denoiser" | "ar")."""

    folder: Path
    config: dict

    @property
    def base(self) -> dict:
        return self.config["base"]

    @property
    def kind(self) -> str:
        return self.config["network"]

    @property
    def sha256(self) -> str:
        """The hash of this adapter as it is on disk now: its weights and the config fields that
        change its output (adapter_sha256)."""
        return adapter_sha256(self.folder)

    @property
    def name(self) -> str:
        """The folder's name, or the run's for a run folder's model/."""
        f = self.folder
        return f.parent.name if f.name == "model" else f.name


def find_adapter(path) -> Path:
    """An adapter folder, or a fine-tuning run folder (its model/)."""
    p = Path(path).expanduser()
    if not (p / ADAPTER_CONFIG).is_file() and (p / "model" / ADAPTER_CONFIG).is_file():
        return p / "model"
    return p


def read_adapter(path) -> Adapter:
    """Read an adapter folder (or run folder). UserInputError (one line) for a path that is not
    there -- the lora setting names something that does not exist; ModelLoadError, one line, if it
    is not a complete blinkgen LoRA adapter. Only safetensors are ever read: a folder with peft's
    pickle file and no safetensors is refused."""
    folder = find_adapter(path)
    if not folder.is_dir():
        raise UserInputError(f"lora: adapter not found: {path}")
    for f in (ADAPTER_WEIGHTS, ADAPTER_CONFIG, CONFIG):
        if not (folder / f).is_file():
            raise ModelLoadError(f"{folder} is not a blinkgen LoRA adapter: {f} is missing")
    try:
        config = json.loads((folder / CONFIG).read_text())
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"{folder}/{CONFIG} is corrupt: {e}") from None
    base = config.get("base") if isinstance(config, dict) else None
    if config.get("family") != FAMILY or not isinstance(base, dict) or "weights_sha256" not in base \
            or config.get("network") not in TARGETS:
        raise ModelLoadError(f"{folder}/{CONFIG} is not a blinkgen LoRA adapter config "
                             "(family 'lora', base.weights_sha256, network)")
    return Adapter(folder.resolve(), config)


def check_base(adapter: Adapter, family: str, sha256: str | None, model_name: str) -> None:
    """Refuse (UserInputError, one line) an adapter trained on another base model than this one."""
    b = adapter.base
    if b.get("family") != family:
        raise UserInputError(f"LoRA adapter {adapter.folder} is for a {b.get('family')} model, "
                             f"not the {family} model {model_name!r}")
    if sha256 is None:
        raise UserInputError(f"model {model_name!r} was not loaded from a folder, so LoRA adapters cannot be "
                             "checked against it; load it with blinkgen.load(folder)")
    if b["weights_sha256"] != sha256:
        raise UserInputError(
            f"LoRA adapter {adapter.folder} was trained on base model {b.get('name')!r} "
            f"(weights sha256 {b['weights_sha256'][:12]}), not on {model_name!r} (weights sha256 "
            f"{sha256[:12]}); fine-tune it again from this model")


def merged(network: nn.Module, adapter: Adapter, scale: float = 1.0) -> nn.Module:
    """A copy of `network` with the adapter folded into its weights at `scale` (peft's
    merge_and_unload): W + scale * (alpha / r) * B @ A. The base network is left untouched.
    ModelLoadError if the adapter's modules are not in this network."""
    from peft import PeftModel

    base = copy.deepcopy(network).float()
    try:
        pm = PeftModel.from_pretrained(base, str(adapter.folder), is_trainable=False)
    except (ValueError, KeyError, RuntimeError) as e:
        raise ModelLoadError(f"LoRA adapter {adapter.folder} does not fit this network: {e}") from None
    for m in pm.modules():
        if hasattr(m, "set_scale") and hasattr(m, "lora_A"):
            m.set_scale("default", float(scale))
    out = pm.merge_and_unload()
    dt = next(network.parameters()).dtype
    return out.to(dt).eval().requires_grad_(False)


def check_scale(scale) -> float:
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or scale != scale or abs(scale) > MAX_SCALE:
        raise UserInputError(f"lora_scale must be a number in [-{MAX_SCALE:g}, {MAX_SCALE:g}], got {scale!r}")
    return float(scale)


class AdapterCache:
    """Merged copies of one pipeline's network, keyed by (adapter folder, its hash, scale), the few
    most recently used kept (a server switching between two adapters merges each once). The hash
    (weights and output-changing config) is in the key so that an adapter trained again into the
    same folder, or its lora_alpha edited, is merged afresh:
    the network that draws an image is always the adapter its PNG's `lora_hash` names."""

    KEEP = 4

    def __init__(self):
        self._nets: OrderedDict[tuple[str, str, float], nn.Module] = OrderedDict()

    def get(self, network: nn.Module, adapter: Adapter, scale: float) -> nn.Module:
        key = (str(adapter.folder), adapter.sha256, float(scale))
        if key in self._nets:
            self._nets.move_to_end(key)
            return self._nets[key]
        net = merged(network, adapter, scale)
        self._nets[key] = net
        while len(self._nets) > self.KEEP:
            self._nets.popitem(last=False)
        return net


def resolve_base(name_or_path) -> Path:
    """The model folder a fine-tuning run adapts: an embedded model name or a folder (UserInputError
    / ModelLoadError, one line, if neither). A LoRA adapter (or a fine-tuning run folder) is not a
    model: UserInputError, one line, saying how to fine-tune from its base, continue it or merge it
    (not_a_base). The registry's resolver, imported on use (the one upward import of this module,
    like train/config.py's)."""
    from ..api import resolve

    if not name_or_path:
        raise UserInputError("fine-tuning needs a base model (--from MODEL: 'default' or a model folder)")
    folder = resolve(str(name_or_path))
    if is_adapter(folder):
        raise UserInputError(not_a_base(name_or_path))
    return folder


def is_adapter(path) -> bool:
    """Whether path is a LoRA adapter folder, or a run folder holding one in model/ (peft's
    adapter_config.json, or a config.json of family "lora"), complete or not."""
    folder = find_adapter(path)
    if (folder / ADAPTER_CONFIG).is_file():
        return True
    try:
        return json.loads((folder / CONFIG).read_text()).get("family") == FAMILY
    except (OSError, ValueError, AttributeError):
        return False


def not_a_base(given) -> str:
    """The one line for `finetune --from` naming a LoRA adapter or its run folder: whose adapter it
    is, and the three ways on -- fine-tune from its base model, continue its run with --resume, or
    fold it into a full model (finetune --merge writes RUN/merged) and fine-tune from that."""
    from ..api import WEIGHTS_DIR

    folder = find_adapter(given)  # the path as the user spelled it (+ /model for a run folder)
    try:
        base = read_adapter(folder).base
    except (ModelLoadError, UserInputError):
        base = {}
    path = base.get("path")
    name = base.get("name") or (Path(path).name if path else "another model")
    embedded = path is not None and Path(path).parent == WEIGHTS_DIR.resolve()
    from_base = f"--from {name if embedded or not path else path}"
    run = folder.parent if folder.name == "model" and (folder.parent / "checkpoints").is_dir() else None
    if run is None:
        resume = "continue its training with --resume on the run folder that made it"
        merge = "fold it into a full model first (its finetune with --merge writes OUT/merged) and fine-tune that"
    else:
        resume = f"continue its training by rerunning the finetune that made it with --out {run} --resume"
        merge = (f"fine-tune from its merged model (--from {run / 'merged'})" if (run / "merged").is_dir()
                 else f"fold it into a full model first (that finetune with --merge writes {run / 'merged'}) "
                      "and fine-tune that")
    what = ("a LoRA adapter" if folder == Path(given).expanduser()
            else f"a LoRA fine-tuning run (adapter in {folder})")
    return (f"{given} is {what} of {name!r}, not a model to fine-tune: fine-tune from its base "
            f"({from_base}), {resume}, or {merge}")


def base_record(folder, family: str, name: str | None = None) -> dict:
    """What an adapter's config.json says about its base model."""
    folder = Path(folder).resolve()
    return {"family": family, "name": name or folder.name, "path": str(folder),
            "weights_sha256": weights_sha256(folder)}


@torch.no_grad()
def adapter_norms(peft_model) -> dict[str, float]:
    """Frobenius norm of every module's low-rank update (B @ A), for logs and tests."""
    out = {}
    for name, m in peft_model.named_modules():
        if hasattr(m, "lora_A") and "default" in getattr(m, "lora_A", {}):
            out[name] = float((m.lora_B["default"].weight @ m.lora_A["default"].weight).norm())
    return out


def folded(peft_model) -> nn.Module:
    """A plain copy of a peft model's network with its adapters merged in (scale 1): what sample
    grids run where a speed device would read the base weights past peft's layers (the AR
    family's fused decode view copies nn.Linear weights)."""
    return copy.deepcopy(peft_model).merge_and_unload().eval().requires_grad_(False)
