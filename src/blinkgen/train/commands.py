"""The training-side subcommands, each thin over the one training loop (parse, build a
TrainConfig, train):
- `blinkgen finetune`: LoRA adapters on a few of your pictures (task "lora" of the base model's
  family), optionally merged;
- `blinkgen distill`: a diffusion model into a few-step shortcut model (task "distill";
  families/diffusion/distill.py).

    blinkgen finetune --from default --data my_mascot/ --out runs/mascot
    blinkgen generate "blinky the robot mascot" --lora runs/mascot
"""
from __future__ import annotations

import sys
from pathlib import Path

from ..checks import THREADS_TRAINING_HELP, threads_arg

# Defaults for "ten pictures, minutes on a laptop" (measured: bench/bench_lora.py, bench/RESULTS.md
# "LoRA fine-tuning"): rank 8 on the attention + MLP projections, AdamW at 1e-3 (adapters start at
# zero, so a higher rate than full training is safe), batch 8, a fifth of the folder held out for
# validation (2 of 10), an evaluation every 50 steps with early stopping after 4 without
# improvement and the best evaluation's weights exported, a sample grid every 100 steps, a
# short EMA, and prior preservation at weight 1 (diffusion: the concept must not leak into other
# prompts; families/diffusion/lora_task.py).
FINETUNE_DEFAULTS = dict(steps=800, batch_size=8, lr=1e-3, warmup=20, min_lr_ratio=0.1, val_fraction=0.2,
                         val_max=32, eval_every=50, sample_every=100, ckpt_every=100, keep_checkpoints=1,
                         patience=4, restore_best=True, ema_decay=0.99, log_every=10, lora_rank=8, prior_weight=1.0)


def finetune_config(base: str, data: str, out: str, **overrides):
    """The TrainConfig of a fine-tuning run: FINETUNE_DEFAULTS, the base model's family and image
    size, then `overrides` (None values ignored). A LoRA adapter (or its run folder) as the base is
    refused in one line saying what to pass instead (lora.resolve_base)."""
    from ..modelio import read_config
    from .config import TrainConfig
    from .lora import resolve_base

    folder = resolve_base(base)
    family = read_config(folder).get("family")
    size = int(read_config(folder).get("image_size", 64))
    d = {**FINETUNE_DEFAULTS, **{k: v for k, v in overrides.items() if v is not None}}
    if family == "diffusion":  # train the adapter on the times the base model was trained (and samples) on
        d.setdefault("t_shift", float(read_config(folder).get("schedule_shift", 1.0)))
    return TrainConfig.from_dict({"family": family, "task": "lora", "base": str(folder), "data": data,
                                  "out": out, "size": size, **d})


def cmd_finetune(args) -> None:
    from .. import load
    from ..textio import read_lines
    from .loop import train

    over = {k: getattr(args, k) for k in ("steps", "lr", "batch_size", "cpu_limit", "threads", "time_limit",
                                          "seed", "eval_every", "sample_every", "patience", "mixed_precision",
                                          "prior_weight")}
    over["lora_rank"] = args.rank
    if args.prompts_file:
        over["sample_prompts"] = read_lines(args.prompts_file, "prompts file")
    cfg = finetune_config(args.base, args.data, args.out, **over)
    print(f"fine-tuning plan: LoRA rank {cfg.lora_rank} on {cfg.base}'s {cfg.family} network, data {cfg.data}; at most "
          f"{cfg.steps} steps of {cfg.batch_size}, validation every {cfg.eval_every} (early stop after "
          f"{cfg.patience} without improvement), prior weight {cfg.prior_weight:g}"
          + (f", CPU limit {cfg.cpu_limit:g}s" if cfg.cpu_limit else "") + f" -> {cfg.out}", file=sys.stderr, flush=True)
    adapter = train(cfg, resume=args.resume)
    print(adapter)
    if args.merge:
        pipe = load(cfg.base)
        print(pipe.save_merged(Path(args.out) / "merged", adapter, args.merge_scale))


def register(sub) -> None:
    register_distill(sub)
    p = sub.add_parser("finetune", help="LoRA fine-tuning of a model on a folder of captioned pictures",
                       description="Train LoRA adapters (peft) on the generator's attention and MLP projections "
                                   "with the one training loop: held-out validation, early stopping, resume, a "
                                   "sample grid every --sample-every steps. Writes the adapter to OUT/model "
                                   "(use it with `blinkgen generate --lora OUT`).")
    p.add_argument("--from", dest="base", required=True, metavar="MODEL", help="embedded model name or model folder")
    p.add_argument("--data", required=True, help="folder of images with captions (metadata.jsonl or .txt sidecars)")
    p.add_argument("--out", required=True, help="run folder: checkpoints/, samples/, tb/, model/ (the adapter)")
    d = FINETUNE_DEFAULTS
    p.add_argument("--rank", type=int, default=None, help=f"adapter rank (default {d['lora_rank']})")
    p.add_argument("--steps", type=int, default=None, help=f"at most this many steps (default {d['steps']})")
    p.add_argument("--lr", type=float, default=None, help=f"(default {d['lr']})")
    p.add_argument("--batch-size", type=int, default=None, help=f"(default {d['batch_size']})")
    p.add_argument("--eval-every", type=int, default=None, help=f"(default {d['eval_every']})")
    p.add_argument("--sample-every", type=int, default=None, help=f"(default {d['sample_every']})")
    p.add_argument("--patience", type=int, default=None,
                   help=f"stop after this many evaluations without improvement, 0 = never (default {d['patience']})")
    p.add_argument("--prior-weight", type=float, default=None, help="diffusion: weight of the prior-preservation "
                   f"term that keeps other prompts drawn as the base model draws them, 0 = off (default {d['prior_weight']})")
    p.add_argument("--cpu-limit", type=float, default=None, help="stop after this many CPU-seconds of training")
    p.add_argument("--time-limit", type=float, default=None, help="stop after this many seconds")
    p.add_argument("--threads", type=threads_arg, default=None, metavar="N", help=THREADS_TRAINING_HELP)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--mixed-precision", default=None, help="auto | no | bf16 | fp16 (default auto)")
    p.add_argument("--prompts-file", default=None, help="prompts for the sample grids (default: the folder's captions)")
    p.add_argument("--resume", action="store_true", help="continue the run folder's last checkpoint")
    p.add_argument("--merge", action="store_true", help="also write OUT/merged, a full model folder with the "
                   "adapter folded in")
    p.add_argument("--merge-scale", type=float, default=1.0, help="adapter scale for --merge (default 1)")
    p.set_defaults(func=cmd_finetune)


def cmd_distill(args) -> None:
    from ..api import resolve
    from ..errors import UserInputError
    from ..families.diffusion.distill import teacher_data_spec
    from ..modelio import read_config
    from .config import TrainConfig
    from .loop import train

    folder = resolve(args.teacher).resolve()
    from .lora import is_adapter

    if is_adapter(folder):  # before reading a model's config keys (an adapter has no image_size)
        raise UserInputError(f"{args.teacher} is a LoRA adapter, not a model to distil: fold it into a full "
                             "model first (rerun the finetune that made it with --merge, which writes OUT/merged) "
                             "and distil that folder")
    family = read_config(folder).get("family")
    if family != "diffusion":
        raise UserInputError(f"{args.teacher} holds a {family!r} model; distill takes a trained diffusion model")
    data = args.data or teacher_data_spec(folder)
    if not data:
        raise UserInputError(f"{folder} does not record the data it was trained on; pass --data")
    opts = {k: getattr(args, k) for k in ("out", "batch_size", "lr", "warmup", "ema_decay", "cpu_limit", "time_limit",
                                          "threads", "seed", "save_dtype", "eval_every", "sample_every",
                                          "ckpt_every", "mixed_precision", "self_consistency_fraction", "order", "mix")}
    cfg = TrainConfig.from_dict({
        **opts, "family": "diffusion", "task": "distill", "teacher": str(folder), "data": data,
        "size": int(read_config(folder)["image_size"]), "steps": args.train_steps,
        "distill_objective": args.objective, "distill_steps": args.steps, "distill_base_steps": args.base_steps,
        "distill_guidance": args.guidance or 0.0, "log_every": 25})
    print(train(cfg, resume=args.resume))


def register_distill(sub) -> None:
    p = sub.add_parser("distill", help="distil a diffusion model into a few-step one (shortcut model; "
                       "classifier-free guidance folded in, so one pass per step)")
    p.add_argument("--from", dest="teacher", required=True, help="the model to distil (folder or embedded name)")
    p.add_argument("--steps", type=int, default=2, help="default sampling steps of the result: 1, 2, 4, ... (default 2)")
    p.add_argument("--out", required=True, help="run folder; the distilled model is written to OUT/model")
    p.add_argument("--data", default=None, help="training images (default: the teacher's recorded training data)")
    p.add_argument("--objective", default="shortcut", choices=["shortcut", "consistency"])
    p.add_argument("--train-steps", type=int, default=4000, help="optimizer steps (default 4000)")
    p.add_argument("--base-steps", type=int, default=32, help="finest grid, a power of 2 (default 32)")
    p.add_argument("--guidance", type=float, default=None, help="guidance folded in (default: the teacher's)")
    p.add_argument("--self-consistency-fraction", type=float, default=0.25)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--ema-decay", type=float, default=0.99)
    p.add_argument("--cpu-limit", type=float, default=0.0, help="CPU-seconds of training (0 = off)")
    p.add_argument("--time-limit", type=float, default=0.0, help="seconds (0 = off)")
    p.add_argument("--threads", type=threads_arg, default=0, metavar="N", help=THREADS_TRAINING_HELP)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save-dtype", default="fp16", choices=["fp32", "fp16", "bf16"])
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--sample-every", type=int, default=0)
    p.add_argument("--ckpt-every", type=int, default=250)
    p.add_argument("--mixed-precision", default="auto")
    p.add_argument("--order", default="image", choices=["image", "group"],
                   help="image: epochs over images (default); group: draw a group, then one of its members")
    p.add_argument("--mix", default="", metavar="W1,W2",
                   help="with --order group: weights of the parts of an 'A+B' --data spec, e.g. 0.4,0.6 -- "
                        "a source's share without changing the spec (a bigger spec moves the held-out split)")
    p.add_argument("--resume", action="store_true", help="continue from the run folder's last checkpoint")
    p.set_defaults(func=cmd_distill)
