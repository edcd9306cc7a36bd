"""Training configuration: one dataclass, JSON in and out, validated with clear errors.
The resolved config is written into the run folder so a run can be reproduced and resumed."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from ..checks import as_float, as_int
from ..data.registry import SHAPES_DEFAULT_N
from ..errors import UserInputError
from ..seeds import check_seed
from ..textio import read_json


@dataclass
class TrainConfig:
    family: str = "diffusion"        # a registered family (blinkgen.families), or an alias of one's task
    task: str = ""                   # the family's training task ("" = its default; see `target`)
    data: str = f"shapes:{SHAPES_DEFAULT_N}"  # dataset spec (see blinkgen.data.registry)
    out: str = "runs/model"          # run folder: checkpoints/, tb/, samples/, model/
    size: int = 64                   # image side in pixels
    preset: str = "S"                # model size preset of the family
    steps: int = 1000
    batch_size: int = 64             # global batch, split across processes
    lr: float = 3e-4
    min_lr_ratio: float = 0.1        # cosine decays to lr * min_lr_ratio
    decay_fraction: float = 1.0      # share of the run (after warm-up) the cosine spans; below 1 the
    # rate holds at lr until then (warmup-stable-decay, train.schedule.lr_at)
    warmup: int = 100
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    ema_extra: str = ""              # more EMA lengths kept beside ema_decay, e.g. "0.9995,0.9999" -> model-ema<d>/
    caption_dropout: float = 0.1     # probability of training on the null prompt (enables CFG)
    t_shift: float = 1.0             # diffusion: SD3 time shift of the training times (> 1: more high
    # noise, where layout is decided); the exported model samples with the same schedule_shift
    t_high_share: float = 0.0        # diffusion: share of training times redrawn from (t_high_from, 1],
    # where sampling starts and the prompt alone must place the scene (sampling/flow.draw_timesteps)
    t_high_from: float = 0.9         # diffusion: lower end of that band, in [0.5, 1)
    multiscale_loss: int = 0         # diffusion: extra 2x-pooled scales in the loss (simple diffusion's
    # multiscale loss, sampling/flow.multiscale_mse; 0 = plain MSE), weighing layout above detail
    text_layers: int = 6             # diffusion: MiniLM layers the denoiser reads (1-6; states after
    # layer k, recorded in the model's config; fine-tunes and distillations take their base's)
    # "auto" = bf16 autocast where the hardware has bf16 matmuls (CUDA; CPUs with AVX512-BF16 or
    # AMX), else "no". Measured on this project's 2-core AVX512-BF16 CPU: bf16 trains the DiT-S
    # ~1.9x faster than fp32 at batch 64 (bench/results/train_speed.json, bench/RESULTS.md).
    mixed_precision: str = "auto"    # "auto" | "no" | "bf16" | "fp16"
    # PyTorch SDPA backend of the training steps (inference keeps torch's choice). "auto" = on a CPU,
    # the family task's choice (Task.cpu_sdpa_backend: "math" for diffusion), "default" elsewhere.
    # Measured on this project's 2-core CPU (bf16, batch 64, 1 thread): the CPU flash-attention
    # backward costs ~21 ms a call at 16-32 tokens; the math backend trains the denoisers 1.14-1.43x
    # faster (uvit-S-p4, uvit-S, DiT-S, unet-S) with the same bf16 gradient error against fp32, and a
    # Llama-XS at 288 causal tokens 0.95x, so the AR family keeps the default (bench/RESULTS.md).
    sdpa_backend: str = "auto"       # "auto" | "math" | "default"
    order: str = "image"             # "image": epochs over images; "group": draw a group, then a member
    mix: str = ""                    # order "group": weights per part of an 'A+B' data spec, e.g. "0.6,0.4"
    cpu_limit: float = 0.0           # CPU-seconds of training steps (all threads, summed over resumes); 0 = off
    threads: int = 0                 # torch intra-op threads (0 = torch's default)
    style_prob: float = 0.8          # share of caption draws that carry the image's style phrase (styled sets)
    augment: str = "none"            # "none" | "mirror" (shapes scenes, captions swapped to match)
    seed: int = 0
    log_every: int = 25
    eval_every: int = 250
    sample_every: int = 500
    ckpt_every: int = 250
    keep_checkpoints: int = 2
    patience: int = 0                # early stopping: evals without val improvement (0 = off)
    restore_best: bool = False       # export the EMA weights of the best validation, not the last
    val_fraction: float = 0.02
    val_max: int = 256
    autoencoder: str | None = None   # diffusion/ar: a trained autoencoder/tokenizer folder
    # Warm start: a trained model folder (or embedded name) of the same network whose weights start a
    # fresh run (not its optimizer state, step or EMA history); a --resume continues its checkpoint
    # instead. Diffusion: its autoencoder/ is the run's unless --autoencoder is given (train.warm_start).
    init_from: str | None = None
    ae_steps: int | None = None      # stage 1 (no --autoencoder); None: train.plan.default_ae_steps
    ae_preset: str | None = None     # stage 1's preset; None: "tiny" for --preset tiny, else "S" (train.plan)
    ae_lr: float = 1e-3
    sample_prompts: list[str] = field(default_factory=list)
    time_limit: float = 0.0           # seconds; stop, save and export when reached (0 = off)
    save_dtype: str = "fp32"         # dtype of the final model's weights ("fp16" halves the size)
    base: str | None = None          # task "lora": the model (embedded name or folder) to fine-tune
    lora_rank: int = 8               # task "lora": rank of the adapters (alpha = rank)
    prior_weight: float = 0.0        # task "lora" (diffusion): weight of the prior-preservation term
    # --- task "distill" (families/diffusion/distill.py; `blinkgen distill` sets these) ---
    teacher: str | None = None       # the trained diffusion model folder to distill
    distill_objective: str = "shortcut"  # "shortcut" (Frans et al. 2024) | "consistency" (Song et al. 2023)
    distill_steps: int = 2           # the distilled model's default sampling steps (a power of 2)
    distill_base_steps: int = 32     # finest grid: shortcut jumps of 1/base (bootstrapped from d = 0); CD's N
    distill_guidance: float = 0.0    # guidance folded into the targets; 0 = the teacher's default
    self_consistency_fraction: float = 0.25  # shortcut: share of each batch with self-consistency targets

    def validate(self) -> "TrainConfig":
        def need(cond, msg):
            if not cond:
                raise UserInputError(msg)
        # Types first (a JSON config or a Python caller may pass "100", 1e3, numpy ints, True):
        # integral values for int fields (checks.as_int: bool refused), real numbers for floats.
        for f in fields(self):
            v = getattr(self, f.name)
            if f.type in ("int", "int | None") and v is not None:
                setattr(self, f.name, as_int(v, f.name))
            elif f.type == "float":
                setattr(self, f.name, as_float(v, f.name))
            elif f.type in ("str", "str | None"):
                need(v is None and f.type == "str | None" or isinstance(v, str), f"{f.name} must be a string, got {v!r}")
        check_seed(self.seed)
        self.target()  # an unknown family or task is a one-line UserInputError
        need(self.size in (32, 64, 128), f"size must be 32, 64 or 128, got {self.size}")
        need(1 <= self.steps <= 10_000_000, f"steps must be between 1 and 10,000,000, got {self.steps}")
        need(self.ae_steps is None or 1 <= self.ae_steps <= 10_000_000,
             f"ae_steps must be between 1 and 10,000,000, got {self.ae_steps}")
        need(1 <= self.batch_size <= 65536, f"batch_size must be between 1 and 65536, got {self.batch_size}")
        need(0 < self.lr < 1, f"lr must be in (0, 1), got {self.lr}")
        need(0 <= self.min_lr_ratio <= 1, f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        need(0 < self.decay_fraction <= 1, f"decay_fraction must be in (0, 1], got {self.decay_fraction}")
        need(0 <= self.caption_dropout < 1, f"caption_dropout must be in [0, 1), got {self.caption_dropout}")
        need(0.1 <= self.t_shift <= 20, f"t_shift must be in [0.1, 20], got {self.t_shift}")
        need(0 <= self.t_high_share < 1, f"t_high_share must be in [0, 1), got {self.t_high_share}")
        need(0.5 <= self.t_high_from < 1, f"t_high_from must be in [0.5, 1), got {self.t_high_from}")
        need(0 <= self.multiscale_loss <= 4, f"multiscale_loss must be between 0 and 4, got {self.multiscale_loss}")
        need(self.multiscale_loss == 0 or self._new_diffusion_model(),
             "multiscale_loss is a setting of a new diffusion model's training (not of other families, "
             "fine-tunes or distillations)")
        need(1 <= self.text_layers <= 6, f"text_layers must be between 1 and 6, got {self.text_layers}")
        need(self.text_layers == 6 or self._new_diffusion_model(),
             "text_layers is a setting of a new diffusion model; other families, fine-tunes and "
             "distillations read the encoder as their base does")
        need(0 <= self.ema_decay < 1, f"ema_decay must be in [0, 1), got {self.ema_decay}")
        need(self.mixed_precision in ("auto", "no", "bf16", "fp16"), "mixed_precision must be auto, no, bf16 or fp16")
        need(self.sdpa_backend in SDPA_BACKENDS, f"sdpa_backend must be auto, math or default, got {self.sdpa_backend!r}")
        need(self.order in ("image", "group"), f"order must be image or group, got {self.order!r}")
        need(not self.mix or self.order == "group", "mix weights need --order group")
        if self.mix:
            from .order import parse_mix
            try:
                w = parse_mix(self.mix)
            except ValueError as e:
                raise UserInputError(str(e)) from None
            need(all(x >= 0 for x in w) and sum(w) > 0, f"mix weights must be >= 0 with a positive sum, got {self.mix!r}")
        need(self.cpu_limit >= 0 and self.threads >= 0, "cpu_limit and threads must be >= 0")
        try:
            decays = self.extra_ema_decays()
        except ValueError:
            decays = [-1.0]
        need(all(0 < d < 1 for d in decays), f"ema_extra must be decays in (0, 1) separated by commas, got {self.ema_extra!r}")
        need(0 <= self.style_prob <= 1, f"style_prob must be in [0, 1], got {self.style_prob}")
        need(self.augment in ("none", "mirror"), f"augment must be none or mirror, got {self.augment!r}")
        need(self.save_dtype in ("fp32", "fp16", "bf16"), "save_dtype must be fp32, fp16 or bf16")
        need(not self.init_from or self.target()[1] not in ("lora", "distill"),
             "init_from starts a fresh network; fine-tuning and distillation start from their --from model")
        need(1 <= self.lora_rank <= 256, f"lora_rank must be between 1 and 256, got {self.lora_rank}")
        need(0 <= self.prior_weight <= 100, f"prior_weight must be in [0, 100], got {self.prior_weight}")
        pow2 = lambda n: n >= 1 and n & (n - 1) == 0  # noqa: E731
        need(self.distill_objective in ("shortcut", "consistency"),
             f"distill_objective must be shortcut or consistency, got {self.distill_objective!r}")
        need(pow2(self.distill_base_steps) and self.distill_base_steps <= 1024,
             f"distill_base_steps must be a power of 2 up to 1024, got {self.distill_base_steps}")
        need(pow2(self.distill_steps) and self.distill_steps <= self.distill_base_steps,
             f"distill steps must be a power of 2 (1, 2, 4, ...) up to distill_base_steps "
             f"({self.distill_base_steps}), got {self.distill_steps}")
        need(0 <= self.distill_guidance <= 30, f"distill_guidance must be in [0, 30], got {self.distill_guidance}")
        need(0 <= self.self_consistency_fraction <= 1,
             f"self_consistency_fraction must be in [0, 1], got {self.self_consistency_fraction}")
        for k in ("log_every", "eval_every", "sample_every", "ckpt_every", "warmup"):
            need(getattr(self, k) >= 0, f"{k} must be >= 0")
        return self

    def _new_diffusion_model(self) -> bool:
        """Whether this config trains a new diffusion model (not a LoRA fine-tune or a distillation):
        the runs whose settings of the denoiser's training (text depth, loss scales) are their own."""
        family, task = self.target()
        return family.name == "diffusion" and task not in ("lora", "distill")

    def target(self):
        """(Family, task name) this config trains: `family` names a registered family (its
        default task unless `task` is set) or one of a family's aliases, the older spellings
        "autoencoder", "tokenizer" and "maskgit", which also name the task."""
        from ..families import training_target

        return training_target(self.family, self.task or None)

    def extra_ema_decays(self) -> list[float]:
        return [float(x) for x in self.ema_extra.split(",") if x.strip()]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise UserInputError(f"unknown training options: {unknown}")
        return cls(**d).validate()

    @classmethod
    def from_json(cls, path) -> "TrainConfig":
        d = read_json(path, "training config")  # InputFileError (one line) if unreadable
        if not isinstance(d, dict):
            raise UserInputError(f"training config {path} must be a JSON object of options")
        return cls.from_dict(d)


SDPA_BACKENDS = ("auto", "math", "default")


def resolve_sdpa_backend(name: str, device_type: str, cpu_choice: str = "default") -> str:
    """'auto' -> the task's `cpu_choice` ("math" or "default", Task.cpu_sdpa_backend) when training on
    a CPU (`device_type` "cpu"), else 'default'; other names pass through. The numbers behind the
    choice are in TrainConfig.sdpa_backend's comment."""
    if name != "auto":
        return name
    return cpu_choice if device_type == "cpu" else "default"


def sdpa_context(name: str):
    """A context manager under which `F.scaled_dot_product_attention` uses backend `name` ('math':
    SDPBackend.MATH only; 'default': torch's own choice). `name` is a resolved TrainConfig.sdpa_backend;
    'auto' raises ValueError (resolve it first). Autograd records the kernel chosen in the forward,
    so wrapping the forward pass also sets the backward's."""
    import contextlib

    from torch.nn.attention import SDPBackend, sdpa_kernel

    if name == "math":
        return sdpa_kernel([SDPBackend.MATH])
    if name == "default":
        return contextlib.nullcontext()
    raise ValueError(f"sdpa backend must be resolved to math or default, got {name!r}")


def resolve_mixed_precision(name: str) -> str:
    """'auto' -> 'bf16' where bf16 matmuls are native (CUDA with bf16 support, or a CPU whose
    capability is AVX512 with the avx512_bf16 flag, or AMX), else 'no'; other names pass through."""
    if name != "auto":
        return name
    import torch

    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "no"
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "no"
    return "bf16" if (" avx512_bf16" in flags or " amx_bf16" in flags) else "no"
