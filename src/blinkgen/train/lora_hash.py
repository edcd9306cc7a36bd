"""The identity of a LoRA adapter: what a PNG drawn with it records as `lora_hash`, what
`generate --from` compares, and the key of a pipeline's merged networks (lora.AdapterCache).

An adapter's images are decided by its weights (adapter_model.safetensors) and by the fields of
peft's adapter_config.json that say how they are applied: `r` and `lora_alpha` set the update's
factor (alpha / r, or alpha / sqrt(r) with `use_rslora`), `target_modules` and its kin choose the
layers it reaches. Editing one of them changes every image while the weights stay byte for byte
the same, so the hash covers both:

    lora_hash = sha256(weights hash (hex) + NUL + canonical JSON of the OUTPUT_FIELDS it sets)

The weights hash is modelio.weights_hash of the adapter folder. The canonical JSON has sorted
keys, no spaces and ASCII only; a field that is absent or off (null, false, empty) is left out, so
a peft version that writes more or fewer "off" fields hashes the same adapter the same; the
set-valued fields are sorted (peft writes a Python set, in no fixed order).

blinkgen first recorded the weights hash alone (`weights_only`); `recorded_matches` accepts a
record in either form, so those PNGs still replay -- checked on the weights only, since their
record says nothing of the config.
"""
from __future__ import annotations

import hashlib
import json

from ..errors import ModelLoadError

# peft LoraConfig fields that change what a saved adapter does to the network at inference (its
# merge); the rest (peft_version, inference_mode, lora_dropout, init_lora_weights, task_type, ...)
# change nothing once the weights are trained.
OUTPUT_FIELDS = ("r", "lora_alpha", "use_rslora", "use_dora", "rank_pattern", "alpha_pattern",
                 "target_modules", "exclude_modules", "target_parameters", "layers_to_transform",
                 "layers_pattern", "layer_replication", "modules_to_save", "trainable_token_indices",
                 "fan_in_fan_out", "bias", "lora_bias")
SET_FIELDS = frozenset({"target_modules", "exclude_modules", "target_parameters", "layers_to_transform",
                        "modules_to_save"})  # order carries no meaning: sorted

_MEMO: dict[tuple, tuple[str, str]] = {}  # adapter_hashes' memo: weights files' stat + config text
_MEMO_KEEP = 64


def output_config(config: dict) -> dict:
    """The OUTPUT_FIELDS an adapter_config.json sets (not absent, null, false or empty), set-valued
    ones sorted: the config half of lora_hash."""
    out = {}
    for k in OUTPUT_FIELDS:
        v = config.get(k)
        if v is None or v is False or v == {} or v == []:
            continue
        out[k] = sorted(v, key=str) if k in SET_FIELDS and isinstance(v, list) else v
    return out


def canonical_json(config: dict) -> str:
    """output_config(config) as canonical JSON (sorted keys, no spaces, ASCII)."""
    return json.dumps(output_config(config), sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def adapter_hashes(path) -> tuple[str, str]:
    """(lora_hash, weights-only hash) of the adapter folder `path` (or a run folder's model/), as
    it is on disk now. The weights' hash is memoised on each weights file's (path, inode, size,
    mtime, ctime), so a server hashes an adapter once rather than per image (save_adapter writes a
    new folder and renames it into place, so a retrained adapter is always a new key); the small
    adapter_config.json is read every time, so an edit to it is never missed. ModelLoadError (one
    line) for a folder without weights, or with no readable adapter_config.json."""
    from .lora import ADAPTER_CONFIG, find_adapter, weights_sha256

    folder = find_adapter(path)
    files = sorted(folder.rglob("*.safetensors")) if folder.is_dir() else []
    if not files:
        raise ModelLoadError(f"{folder} holds no adapter weights (*.safetensors)")
    config_file = folder / ADAPTER_CONFIG
    try:
        text = config_file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ModelLoadError(f"{folder} is not a LoRA adapter: {ADAPTER_CONFIG} is missing") from None
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"{config_file} cannot be read: {e}") from None
    key = (*((str(f.resolve()), st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
             for f, st in ((f, f.stat()) for f in files)), text)
    if key not in _MEMO:
        try:
            config = json.loads(text)
        except ValueError as e:
            raise ModelLoadError(f"{config_file} is corrupt: {e}") from None
        if not isinstance(config, dict):
            raise ModelLoadError(f"{config_file} is not peft's LoRA config (a JSON object)")
        weights = weights_sha256(folder)
        full = hashlib.sha256(f"{weights}\0{canonical_json(config)}".encode("ascii")).hexdigest()
        if len(_MEMO) >= _MEMO_KEEP:
            _MEMO.clear()
        _MEMO[key] = (full, weights)
    return _MEMO[key]


def adapter_sha256(path) -> str:
    """The identity of an adapter: its weights and the config fields that change its output (see
    the module doc) -- what a PNG drawn with it records as `lora_hash`. ModelLoadError as
    adapter_hashes."""
    return adapter_hashes(path)[0]


def weights_only(path) -> str:
    """The hash older blinkgens recorded as `lora_hash`: the adapter's weights alone."""
    return adapter_hashes(path)[1]


def recorded_matches(recorded: str, path) -> bool:
    """Whether a recorded `lora_hash` names the adapter at `path` as it is now: equal to its
    lora_hash, or to its weights-only hash (a PNG from an older blinkgen, checked on the weights
    only). ModelLoadError as adapter_hashes."""
    return recorded in adapter_hashes(path)

