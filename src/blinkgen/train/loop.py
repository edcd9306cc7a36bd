"""The one training loop, for every family, on Accelerate (so multi-process / multi-GPU is a
launch flag: `accelerate launch` or `torchrun`).

The loop knows no family: `TrainConfig.target()` names a family and one of its tasks through the
registry (blinkgen.families), and the task follows the protocol documented in task.py (named
optimizers, one loss per optimizer, an optional frozen teacher, logs that reach TensorBoard).

Why this shape: the data live in device memory and each step's indices and randomness are pure
functions of (seed, step) -- see task.py -- so resume is exact, the data order needs no saved
state, and N processes sharing a global batch compute the same step as one process does.
"""
from __future__ import annotations

import json
import logging
import math
import os
import signal
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from ..data.augment import augment
from ..data.types import ImageCaptionSet
from ..errors import UserInputError
from ..eval.leakage import val_seen_by_ancestors
from ..outputs import check_folder
from ..modelio import read_tensors, state_dict_for_save, unwrap, write_folder_atomic, write_json_atomic
from ..seeds import torch_seed
from .checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from .run_checks import check_resume_matches, held_out_note
from .config import TrainConfig, resolve_mixed_precision, resolve_sdpa_backend, sdpa_context
from .plan import stage1_config
from .ema import EMA, short_run_warnings
from .order import BatchOrder, make_order  # noqa: F401  (BatchOrder: re-exported)
from .schedule import lr_at
from .warm_start import precheck, warm_start, with_init_autoencoder

log = logging.getLogger(__name__)
BEST = "best"  # run/best/: the EMA weights of the best validation so far (cfg.restore_best)


def split(data: ImageCaptionSet, cfg: TrainConfig) -> tuple[ImageCaptionSet, ImageCaptionSet]:
    """Deterministic held-out split (seeded), at least one image on each side."""
    n = len(data)
    if n < 2:
        raise UserInputError(f"the dataset has {n} usable image(s); training needs at least 2")
    n_val = max(1, min(cfg.val_max, int(round(n * cfg.val_fraction))))
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(torch_seed(cfg.seed + 7))).tolist()
    return data.subset(sorted(perm[n_val:])), data.subset(sorted(perm[:n_val]))


class _StopFlag:
    """Ctrl-C / SIGTERM: finish the current step, save a checkpoint, exit cleanly."""

    def __init__(self):
        self.stop = False
        self._old = {}

    def __enter__(self):
        for s in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[s] = signal.signal(s, self._handler)
            except ValueError:  # not the main thread (e.g. inside a server): no handler
                pass
        return self

    def _handler(self, *_):
        if self.stop:  # second Ctrl-C: give up at once
            raise KeyboardInterrupt
        self.stop = True

    def __exit__(self, *exc):
        for s, h in self._old.items():
            signal.signal(s, h)


def _release_precision(mixed_precision: str) -> None:
    """Accelerate keeps one process-wide AcceleratorState and refuses a second Accelerator with
    another mixed precision ("restart your runtime"). Runs in one process (the Python API, tests,
    a stage-1 autoencoder before its diffusion stage) may differ, so the state -- not the
    distributed PartialState -- is reset when the precision changes."""
    from accelerate.state import AcceleratorState

    old = AcceleratorState._shared_state.get("_mixed_precision")
    if old is not None and old != mixed_precision:
        AcceleratorState._reset_state()


def train(cfg: TrainConfig, resume: bool = False, data: ImageCaptionSet | None = None) -> Path:
    """Runs (or resumes) a training run; returns the exported model folder."""
    from accelerate import Accelerator

    cfg = with_init_autoencoder(cfg.validate())  # --init-from: its autoencoder unless one is named
    if cfg.init_from and not (resume and latest_checkpoint(Path(cfg.out)) is not None):
        precheck(cfg)  # a wrong folder fails now, not after the data are encoded
    family, task_name = cfg.target()
    ae_cfg = stage1_config(cfg)  # stage 1: the autoencoder / tokenizer it needs (train.plan: steps, preset)
    if ae_cfg is not None:
        ae_folder = Path(ae_cfg.out) / "model"
        if not (ae_folder / "config.json").is_file() or (resume and _unfinished(Path(ae_cfg.out))):
            ae_folder = train(ae_cfg, resume=resume, data=data)
        cfg = replace(cfg, autoencoder=str(ae_folder))

    cfg = replace(cfg, mixed_precision=resolve_mixed_precision(cfg.mixed_precision))  # recorded resolved
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    elif not os.environ.get("OMP_NUM_THREADS") and not torch.cuda.is_available():  # a CPU run at torch's default
        from ..speed.threads import busy_cores_warning

        warning = busy_cores_warning(torch.get_num_threads())
        if warning:
            log.warning(warning)
    _release_precision(cfg.mixed_precision)
    acc = Accelerator(mixed_precision=cfg.mixed_precision, cpu=not torch.cuda.is_available())
    run = Path(cfg.out)
    main = acc.is_main_process
    check_folder(run, "run folder (--out)")  # a file there: one line now, not a traceback later
    if resume:
        check_resume_matches(run, cfg)  # before the data are loaded and encoded
    if data is None:
        from ..data.registry import load_dataset
        data = load_dataset(cfg.data, cfg.size, cfg.seed)
    if data.size != cfg.size:
        raise UserInputError(f"dataset images are {data.size}px but size={cfg.size}")
    train_set, val_set = split(data, cfg)
    note = held_out_note(len(data), val_set) if main else None
    if note:  # said like the run's plan (stderr), not only at --verbose
        print(note, file=sys.stderr, flush=True)
    train_set = augment(train_set, cfg.augment)  # after the split: a mirror never leaks into val
    torch.manual_seed(cfg.seed)  # model init is a function of the seed
    task = family.task_class(task_name)(cfg, train_set, val_set, acc.device)
    model = task.model.to(acc.device)
    cfg = replace(cfg, sdpa_backend=resolve_sdpa_backend(cfg.sdpa_backend, acc.device.type,
                                                         getattr(task, "cpu_sdpa_backend", "default")))  # recorded resolved
    ck = latest_checkpoint(run)
    if ck is not None and not resume:
        raise UserInputError(f"{run} already holds checkpoints; pass --resume to continue it or choose a new --out")
    if ck is None and resume and main:  # resuming is "continue if there is anything": say which it was
        log.warning("--resume: %s holds no checkpoint, so this is a fresh run from step 0", run)
    warm = None  # --init-from: a fresh run starts at a trained folder's weights; a resume ignores it
    if cfg.init_from and ck is None:
        warm = warm_start(task, cfg)  # before the EMA copies below, so they start there too
    elif cfg.init_from and main:
        log.info("--init-from ignored: resuming %s", ck)
    ancestry = val_seen_by_ancestors(cfg, val_set.images) if main else None
    if ancestry and ancestry["seen"] != 0:
        log.warning("%s of the %d validation images were in the training split of the model this run starts "
                    "from (%s): its validation loss is flattered; train on that model's --data spec to keep "
                    "them unseen", "an unknown number" if ancestry["seen"] is None else ancestry["seen"],
                    ancestry["n_reference"], "; ".join(f"{r['role']} on {r['data']}" for r in ancestry["runs"]))
    _frozen_teacher(task, model, acc.device)  # the task's losses read task.teacher
    ema = EMA(model, cfg.ema_decay)
    extra_emas = {f"{d:g}": EMA(model, d) for d in cfg.extra_ema_decays()}  # EMA length, chosen after training
    if main:
        for line in short_run_warnings(cfg.steps, cfg.ema_decay, cfg.extra_ema_decays(),
                                       export="adapter" if task_name == "lora" else None):  # finetune has no EMA flags
            log.warning(line)
    task.bind_ema(ema.model)  # the same module a resume loads into, so the task always reads the current EMA
    opts = task.optimizers(model, cfg, acc.device)
    loss_fns = task.losses()
    if list(opts) != list(loss_fns):
        raise RuntimeError(f"{type(task).__name__}: optimizers {list(opts)} and losses {list(loss_fns)} must "
                           "have the same names in the same order")
    start, best, bad_evals, history, cpu_before, wall_before = 0, math.inf, 0, [], 0.0, 0.0
    if ck is not None:
        st = load_checkpoint(ck, model, ema.model, opts, {k: e.model for k, e in extra_emas.items()})
        start, best, bad_evals = st["step"], st.get("best", math.inf), st.get("bad_evals", 0)
        cpu_before = st.get("cpu_seconds", 0.0)  # training CPU time of the earlier sessions
        wall_before = st.get("wall_seconds")  # None: a checkpoint from before wall time was recorded
        if main:
            log.info("resumed %s at step %d", ck, start)
    if main:  # made only now: a run that fails on its data or flags leaves no empty folder behind
        run.mkdir(parents=True, exist_ok=True)
        write_json_atomic(run / "train_config.json", cfg.to_dict())
        if warm is not None:
            write_json_atomic(run / "init_from.json", warm)
    model, *prepared = acc.prepare(model, *opts.values())
    opts = dict(zip(opts, prepared))

    B, world, rank = cfg.batch_size, acc.num_processes, acc.process_index
    if B % world:
        raise UserInputError(f"batch_size {B} must be divisible by the number of processes ({world})")
    local = B // world
    if task.n_train != len(train_set):
        raise RuntimeError(f"task trains on {task.n_train} images, the loop's order covers {len(train_set)}")
    try:
        order = make_order(cfg.order, train_set.group_ids(), cfg.seed, train_set.part_list(), cfg.mix)
    except ValueError as e:
        raise UserInputError(str(e)) from None
    writer = _writer(run) if main else None
    bar = _bar(cfg.steps, start, main, task_name)
    t_last, seen = time.perf_counter(), 0
    t_start = t_steady = t_last
    cpu0 = time.process_time()  # CPU time of this process, all threads; setup above not counted

    def cpu_used() -> float:
        return cpu_before + time.process_time() - cpu0

    def wall_used() -> float | None:  # wall seconds of all sessions of this run; None when unknown
        return None if wall_before is None else wall_before + time.perf_counter() - t_start
    step = start
    with _StopFlag() as flag:
        while step < cfg.steps:
            lr = lr_at(step, cfg.lr, cfg.warmup, cfg.steps, cfg.min_lr_ratio, cfg.decay_fraction)
            for opt in opts.values():
                for gparam in opt.param_groups:
                    gparam["lr"] = lr * gparam.get("lr_scale", 1.0)
            g = torch.Generator().manual_seed(torch_seed(cfg.seed * 7_919 + step * 104_729 + 1))
            rnd = task.draw(g, B)
            rows = slice(rank * local, (rank + 1) * local)
            idx = order.indices(step, B)[rows].to(acc.device)
            my_rnd = {k: v[rows] for k, v in rnd.items()}
            terms = {}
            for name, loss_fn in loss_fns.items():  # one phase per named optimizer
                opt = opts[name]
                with acc.autocast(), sdpa_context(cfg.sdpa_backend):
                    loss, logs = loss_fn(model, idx, my_rnd)
                acc.backward(loss)  # the backward's kernels are the forward's (recorded by autograd)
                if cfg.grad_clip > 0:
                    acc.clip_grad_norm_([p for gp in opt.param_groups for p in gp["params"]], cfg.grad_clip)
                opt.step()
                model.zero_grad(set_to_none=True)  # the next phase starts from clean gradients
                terms[name] = (loss, logs)
            ema.update(unwrap(model), step)
            for e in extra_emas.values():
                e.update(unwrap(model), step)
            step += 1
            seen += B
            if main and cfg.log_every and step % cfg.log_every == 0:
                now = time.perf_counter()
                ips = seen / max(now - t_last, 1e-9)
                t_last, seen = now, 0
                shown = _log_terms(writer, terms, step)
                writer.add_scalar("train/lr", lr, step)
                writer.add_scalar("train/images_per_s", ips, step)
                bar.set_postfix(**{k: f"{v:.4f}" for k, v in shown.items()}, img_s=f"{ips:.0f}")
            bar.update(1)
            if step - start == 10:  # throughput excludes the first steps (allocation, warm-up)
                t_steady = time.perf_counter()
            stop_now = flag.stop
            if cfg.time_limit > 0 or cfg.cpu_limit > 0:
                why = ""
                if cfg.cpu_limit > 0 and cpu_used() >= cfg.cpu_limit:
                    why = f"CPU limit of {cfg.cpu_limit:.0f} CPU-s"
                if cfg.time_limit > 0 and time.perf_counter() - t_start > cfg.time_limit:
                    why = f"time limit of {cfg.time_limit:.0f}s"
                over = bool(why)
                if world > 1:  # every process must agree on the step it stops at
                    over = acc.reduce(torch.tensor(int(over), device=acc.device), reduction="sum").item() > 0
                if over:
                    if main:
                        bar.write(f"{why or 'another process hit its limit'}: stopping at step {step}")
                    stop_now = True
            if cfg.eval_every and (step % cfg.eval_every == 0 or step == cfg.steps or stop_now):
                if main:
                    metrics = task.validate(ema.model)
                    history.append({"step": step, **metrics})
                    for k, v in metrics.items():
                        writer.add_scalar(f"val/{k}", v, step)
                    if metrics["val_loss"] < best - 1e-6:
                        best, bad_evals = metrics["val_loss"], 0
                        if cfg.restore_best:  # the weights early stopping will hand back
                            write_folder_atomic(run / BEST, {"ema.safetensors": state_dict_for_save(ema.model),
                                                             "state.json": {"step": step, **metrics}})
                    else:
                        bad_evals += 1
                    bar.write(f"step {step}: " + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
                stop_early = torch.tensor(int(cfg.patience > 0 and bad_evals >= cfg.patience), device=acc.device)
                stop_early = acc.reduce(stop_early, reduction="sum").item() > 0
                if stop_early:
                    if main:
                        bar.write(f"early stopping at step {step}: no val improvement in {cfg.patience} evals")
                    stop_now = True
            if main and cfg.sample_every and step % cfg.sample_every == 0:
                img = task.samples(ema.model, step)
                (run / "samples").mkdir(exist_ok=True)
                img.save(run / "samples" / f"step-{step:08d}.png")
            if (cfg.ckpt_every and step % cfg.ckpt_every == 0) or stop_now or step == cfg.steps:
                if main:
                    save_checkpoint(run, step, unwrap(model), ema.model, opts,
                                    {"best": best, "bad_evals": bad_evals, "config": cfg.to_dict(),
                                     "cpu_seconds": cpu_used(), "wall_seconds": wall_used()},
                                    keep=cfg.keep_checkpoints, extra_emas={k: e.model for k, e in extra_emas.items()})
                acc.wait_for_everyone()
            if stop_now:
                break
    bar.close()
    out = run / "model"
    if main:
        if history:
            (run / "val_history.jsonl").open("a").write("".join(json.dumps(h) + "\n" for h in history))
        extra = {"training": {"data": cfg.data, "steps": step, "batch_size": B, "seed": cfg.seed,
                              "val_fraction": cfg.val_fraction, "val_max": cfg.val_max,  # the held-out split
                              "preset": cfg.preset, "finished": step >= cfg.steps}}
        done = step - start
        steady = max(done - 10, 0)
        stats = {"steps_run": done, "final_step": step, "seconds": time.perf_counter() - t_start,
                 "cpu_seconds_total": cpu_used(), "seconds_total": wall_used(), "resumed_from_step": start,
                 "images_per_s": steady * B / max(time.perf_counter() - t_steady, 1e-9) if steady else None,
                 "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
                 "processes": world, "torch_threads": torch.get_num_threads(), "batch_size": B,
                 "mixed_precision": cfg.mixed_precision, "sdpa_backend": cfg.sdpa_backend}
        write_json_atomic(run / "train_stats.json", stats)
        # "seconds" is this session only; a resumed run's totals sit beside it, so a reader of the
        # config never takes the last leg's wall time for the whole run's cost
        extra["training"]["seconds"] = round(stats["seconds"], 1)
        extra["training"]["cpu_seconds"] = round(stats["cpu_seconds_total"], 1)
        if start:
            extra["training"]["resumed_from_step"] = start
            extra["training"]["seconds_total"] = (None if stats["seconds_total"] is None
                                                  else round(stats["seconds_total"], 1))
        extra["training"]["device"] = stats["device"]
        if warm is not None or cfg.init_from:  # a resumed warm-started run: the first leg's record
            extra["training"]["init_from"] = warm or _recorded_init(run)
        if ancestry is not None:  # eval/leakage.py: validation images its starting model trained on
            extra["training"]["val_seen_by_ancestors"] = ancestry["seen"]
        if cfg.restore_best and (run / BEST / "ema.safetensors").is_file():
            ema.model.load_state_dict(read_tensors(run / BEST / "ema.safetensors"))
            extra["training"]["exported"] = json.loads((run / BEST / "state.json").read_text())
        def record(e: EMA, at: int) -> dict:  # the decay its warm-up had reached after `at` steps
            reached = e.warm_decay(max(at - 1, 0))  # below the named one in short runs
            return {**extra, "training": {**extra["training"], "ema_decay_reached": reached}}
        task.export(ema.model, out, record(ema, extra["training"].get("exported", {}).get("step", step)))
        for k, e in extra_emas.items():  # the same run's other EMA lengths, for choosing after training
            task.export(e.model, run / f"model-ema{k}", {**record(e, step), "ema_decay": float(k)})
        writer.close()
    acc.wait_for_everyone()
    if flag.stop:
        raise KeyboardInterrupt(f"training interrupted at step {step}; checkpoint saved, resume with --resume")
    return out


def _recorded_init(run: Path):
    """A resumed run's warm-start record, written by its first session (None if it has none)."""
    p = run / "init_from.json"
    return json.loads(p.read_text()) if p.is_file() else None


def _unfinished(run: Path) -> bool:
    ck = latest_checkpoint(run)
    if ck is None:
        return True
    st = json.loads((ck / "state.json").read_text())
    return st["step"] < st["config"]["steps"]


def _writer(run: Path):
    from torch.utils.tensorboard import SummaryWriter
    return SummaryWriter(str(run / "tb"))


def _bar(total, initial, enabled, desc):
    from ..progress import bar
    return bar(total=total, initial=initial, enabled=enabled, desc=f"train {desc}", unit="step")


def _frozen_teacher(task, model: torch.nn.Module, device):
    """The task's optional teacher, on the device, in eval mode, without gradients; it must not
    share a parameter with the trained model (it would be optimised, averaged and checkpointed)."""
    teacher = getattr(task, "teacher", None)
    if teacher is None:
        return None
    own = {id(p) for p in model.parameters()}
    if any(id(p) in own for p in teacher.parameters()):
        raise RuntimeError(f"{type(task).__name__}.teacher shares parameters with its model; keep it separate")
    return teacher.to(device).eval().requires_grad_(False)


def _log_terms(writer, terms: dict, step: int) -> dict[str, float]:
    """Every loss and logged term to TensorBoard: train/loss and train/<term> for a single-optimizer
    task, train/<optimizer>/loss and train/<optimizer>/<term> for several. Returns the losses shown
    on the progress bar."""
    shown = {}
    for name, (loss, logs) in terms.items():
        prefix = "train" if len(terms) == 1 else f"train/{name}"
        shown["loss" if len(terms) == 1 else f"loss_{name}"] = value = float(loss.detach().float())
        writer.add_scalar(f"{prefix}/loss", value, step)
        for k, v in logs.items():
            writer.add_scalar(f"{prefix}/{k}", float(v.detach().float()) if torch.is_tensor(v) else float(v), step)
    return shown
