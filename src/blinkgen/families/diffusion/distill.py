"""Few-step distillation of a trained diffusion model: the diffusion family's `distill` task,
run by the one training loop (`blinkgen distill --from MODEL --steps K --out DIR`).

Objective "shortcut" (the default; after: Frans, Hafner, Levine, Abbeel 2024, "One Step Diffusion
via Shortcut Models"). The student is the teacher plus a step-size input d (models/dit.py: an
embedding of d added to the conditioning vector, zero-initialised, so it starts as the teacher).
It learns s(x_t, t, d), the average velocity over a jump from t to t - d, from two kinds of
targets on each batch:
  - d = 0 rows (1 - self_consistency_fraction of the batch): the teacher's velocity with
    classifier-free guidance folded in, v_u + w (v_c - v_u) (one batched 2B pass of the frozen
    teacher), so the student needs one pass per step and runs at guidance 1;
  - self-consistency rows: a jump of size D in {1, 1/2, ..., 1/base} from a time on its grid
    (t = k D) must equal two half jumps of the EMA student:
        s(x_t, t, D) = (s_ema(x_t, t, D/2) + s_ema(x_t - D/2 s_ema(x_t, t, D/2), t - D/2, D/2)) / 2,
    where the finest jump D = 1/base is made of two d = 0 half steps (the guided flow itself).
No JVP and no second trained network. The student samples with the plain Euler solver on K
uniform steps with d = 1/K (`sampling.flow.step_size_lookup`); the exported folder is a normal
diffusion model folder (defaults: Euler, K steps, guidance 1) that records the teacher, the
folded guidance w and the objective under "distilled".

Objective "consistency" (the alternative measured beside it; after: Song, Dhariwal, Chen,
Sutskever 2023, "Consistency Models", consistency distillation): the student's data prediction
f(x_t, t) = x_t - t v(x_t, t) (which already meets the boundary condition f(x_0, 0) = x_0) is
trained to agree with the EMA student's prediction one guided teacher Euler step closer to the
data on an N = base grid. The student keeps the plain interface (no step-size input); Euler on K
steps then re-noises each prediction along the implied noise, deterministically.
"""
from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F

from ...api import resolve
from ...data.types import ImageCaptionSet
from ...errors import UserInputError
from ...modelio import read_config
from ...models.denoisers import has_step_size_input, with_step_size_input
from ...pipeline import requests
from ...pngmeta import grid
from ...precision import dtype_of
from ...sampling.flow import SAMPLERS, STOCHASTIC, flow_schedule, interpolate, sample_euler, step_size_lookup
from ...text.encoder import TEXT_LAYERS
from ...train.config import TrainConfig
from .folder import DEFAULT_SETTINGS, load_diffusion_folder, save_diffusion_folder
from .pipeline import DiffusionPipeline
from .tasks import DiffusionTask

VAL_IMAGES = 32  # validation prompts: the EMA student's K-step latents against the teacher's


def teacher_data_spec(folder) -> str | None:
    """The dataset spec the teacher was trained on (its config's training.data), if recorded."""
    return (read_config(resolve(str(folder))).get("training") or {}).get("data")


def guided_velocity(net, x, t, text, null, w: float, interval=None, **kw) -> torch.Tensor:
    """Classifier-free guidance as a distillation target: v_u + w (v_c - v_u) for every row, from
    ONE pass over the doubled batch (2B rows); rows with t outside interval (lo, hi) take v_c (the
    guidance interval of the teacher's defaults). x (B, C, S, S); t (B,); text, null: (states,
    mask, pooled) for the prompts and for the null prompt. w == 1: one pass of B rows, v_c."""
    if w == 1.0:
        return net(x, t, *text, **kw).float()
    both = [torch.cat([a, b]) for a, b in zip(text, null)]
    v_c, v_u = net(torch.cat([x, x]), torch.cat([t, t]), *both, **kw).float().chunk(2)
    g = v_u + w * (v_c - v_u)
    if interval is not None:
        inside = ((t >= interval[0]) & (t <= interval[1])).view(-1, *[1] * (x.dim() - 1))
        g = torch.where(inside, g, v_c)
    return g


def _release_freed_heap() -> None:
    """Give freed heap pages back to the OS (glibc's malloc_trim). Setup converts the caption
    encodings of the whole table to fp16 and drops the fp32 copy (~2.5 GB for the emoji set);
    glibc keeps those pages, so without this a run holds ~5.6 GB instead of ~3 GB for hours, and
    two runs on a 24 GB machine shared with other jobs were killed for memory."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass


def teacher_guidance(cfg: TrainConfig, teacher_config: dict) -> tuple[float, tuple[float, float] | None]:
    """(w, guidance interval) folded into the targets: cfg.distill_guidance, else the teacher's
    default guidance; the teacher's default guidance interval (None = always)."""
    d = {**DEFAULT_SETTINGS, **teacher_config.get("defaults", {})}
    gi = d.get("guidance_interval")
    interval = None if gi is None or tuple(gi) == (0.0, 1.0) else (float(gi[0]), float(gi[1]))
    return float(cfg.distill_guidance or d["guidance"]), interval


def distilled_config(cfg: TrainConfig, teacher_config: dict, teacher_folder, w: float, interval) -> dict:
    """The distilled folder's config keys: the teacher's text settings and styles, the distilled
    defaults (Euler, K steps, guidance 1, the teacher's style) and provenance under "distilled"."""
    tc, c = teacher_config, cfg
    style = (tc.get("defaults") or {}).get("style")
    out = {"image_size": c.size, "schedule_shift": 1.0,  # the uniform grid the jumps were learnt on
           "defaults": {"steps": c.distill_steps, "guidance": 1.0, "sampler": "euler", **({"style": style} if style else {})},
           "distilled": {"objective": c.distill_objective, "teacher": str(teacher_folder),
                         "teacher_defaults": tc.get("defaults"), "guidance": w,
                         "guidance_interval": list(interval) if interval else None,
                         "steps": c.distill_steps, "base_steps": c.distill_base_steps,
                         "self_consistency_fraction": c.self_consistency_fraction if c.distill_objective == "shortcut" else None}}
    for k in ("text_max_tokens", "text_layers", "null_prompt", "styles"):
        if k in tc:
            out[k] = tc[k]
    return out


def export_checkpoint(run, out, ema: str | None = None) -> Path:
    """A distill run's latest checkpoint (its EMA weights; `ema`: an extra EMA length) as a model
    folder, while the run goes on (scripts/export_checkpoint.py calls this for distill runs)."""
    import json

    from ...modelio import read_tensors
    from ...train.checkpoint import latest_checkpoint

    run = Path(run).expanduser()
    cfg = TrainConfig.from_dict(json.loads((run / "train_config.json").read_text()))
    ck = latest_checkpoint(run)
    if ck is None:
        raise UserInputError(f"{run} has no checkpoint yet")
    state = json.loads((ck / "state.json").read_text())
    folder = resolve(cfg.teacher)
    teacher, ae, tc = load_diffusion_folder(folder)
    net = with_step_size_input(teacher) if cfg.distill_objective == "shortcut" else teacher
    net.load_state_dict(read_tensors(ck / (f"ema.{ema}.safetensors" if ema else "ema.safetensors")))
    w, interval = teacher_guidance(cfg, tc)
    extra = {**distilled_config(cfg, tc, folder, w, interval),
             "training": {"data": cfg.data, "steps": state["step"], "batch_size": cfg.batch_size, "seed": cfg.seed,
                          "cpu_seconds": round(state.get("cpu_seconds", 0.0), 1), "checkpoint": ck.name,
                          "finished": state["step"] >= cfg.steps}}
    return save_diffusion_folder(out, net.eval(), ae, extra, dtype=dtype_of(cfg.save_dtype))


class DistillTask(DiffusionTask):
    """The `distill` task (module doc). cfg.teacher: the model folder or embedded name to
    distill; its autoencoder, prompts, null prompt and style phrases are kept."""

    def __init__(self, cfg: TrainConfig, train: ImageCaptionSet, val: ImageCaptionSet, device):
        if not cfg.teacher:
            raise UserInputError("the distill task needs the model to distill (blinkgen distill --from MODEL)")
        folder = resolve(cfg.teacher)
        self.teacher_config = read_config(folder)
        if self.teacher_config.get("family") != "diffusion":
            raise UserInputError(f"{folder} holds a {self.teacher_config.get('family')!r} model; distill takes a diffusion model")
        if int(self.teacher_config["image_size"]) != cfg.size:
            raise UserInputError(f"the teacher makes {self.teacher_config['image_size']}px images; set size to match (got {cfg.size})")
        self.teacher_folder = folder
        super().__init__(replace(cfg, autoencoder=str(folder)), train, val, device)
        self.w, self.interval = teacher_guidance(cfg, self.teacher_config)
        self.levels = int(math.log2(cfg.distill_base_steps))  # jumps 2^0 .. 2^-levels
        self.ema = None
        self._val = None
        _release_freed_heap()

    def text_layers(self) -> int:
        return int(self.teacher_config.get("text_layers", TEXT_LAYERS))  # the student reads as its teacher

    def _build_model(self, cfg: TrainConfig) -> torch.nn.Module:
        teacher, _, _ = load_diffusion_folder(resolve(cfg.teacher))
        if has_step_size_input(teacher):
            raise UserInputError(f"{cfg.teacher} is already a distilled (step-size) model; distill its teacher")
        self.teacher = teacher  # frozen by the loop: never optimised, averaged or checkpointed
        if cfg.distill_objective == "shortcut":
            return with_step_size_input(teacher)
        import copy

        return copy.deepcopy(teacher)

    def bind_ema(self, ema_model: torch.nn.Module) -> None:
        self.ema = ema_model

    # ---- randomness and targets ----------------------------------------------------------
    def draw(self, g: torch.Generator, B: int) -> dict:
        rnd = super().draw(g, B)
        rnd["t"] = 1.0 - torch.rand((B,), generator=g)  # d = 0 rows: uniform on (0, 1], the whole path
        rnd["sc"] = torch.rand((B,), generator=g) < self.cfg.self_consistency_fraction
        rnd["level"] = torch.randint(0, self.levels + 1, (B,), generator=g)  # jump D = 2^-level
        rnd["u_grid"] = torch.rand((B,), generator=g)  # picks the time on the jump's grid
        return rnd

    def _text(self, idx, rnd):
        dev = self.device
        cid = self.captions.draw(idx, rnd["u"].to(dev), rnd["u_style"].to(dev), rnd["u_pick"].to(dev),
                                 self.cfg.style_prob)  # no caption dropout: the student runs at guidance 1
        return self.text(cid), self.text(torch.full_like(cid, self.null_id))

    def losses(self) -> dict:
        return {"model": self.shortcut_loss if self.cfg.distill_objective == "shortcut" else self.consistency_loss}

    def shortcut_loss(self, model, idx, rnd):
        dev = self.device
        x0, noise = self.latents[idx], rnd["noise"].to(dev)
        text, null = self._text(idx, rnd)
        sc = rnd["sc"].to(dev)  # (b,) bool: self-consistency rows
        level = rnd["level"].to(dev)
        jump = torch.pow(2.0, -level.float())  # (b,) D
        t_grid = (torch.floor(rnd["u_grid"].to(dev) * 2.0 ** level.float()) + 1) * jump  # in {D, 2D, ..., 1}
        t = torch.where(sc, t_grid, rnd["t"].to(dev))
        d = torch.where(sc, jump, torch.zeros_like(jump))
        x = interpolate(x0, noise, t)
        target = torch.empty_like(x)
        fm = ~sc
        with torch.no_grad():
            if fm.any():
                target[fm] = guided_velocity(self.teacher, x[fm], t[fm], [a[fm] for a in text],
                                             [a[fm] for a in null], self.w, self.interval)
            if sc.any():
                target[sc] = self._two_half_jumps(x[sc], t[sc], jump[sc], level[sc], [a[sc] for a in text])
        pred = model(x, t, *text, d=d).float()
        err = (pred - target).square().flatten(1).mean(1)  # (b,)
        logs = {"loss_flow": err[fm].mean().detach() if fm.any() else 0.0,
                "loss_self_consistency": err[sc].mean().detach() if sc.any() else 0.0}
        return err.mean(), logs

    def _two_half_jumps(self, x, t, jump, level, text):
        """The self-consistency target of a jump D from x at t: the mean of two EMA jumps of D/2
        (the second from where the first lands); the finest jump's halves use d = 0."""
        half = jump / 2
        d_half = torch.where(level == self.levels, torch.zeros_like(half), half)
        s1 = self.ema(x, t, *text, d=d_half).float()
        x_mid = x - half.view(-1, 1, 1, 1) * s1
        s2 = self.ema(x_mid, t - half, *text, d=d_half).float()
        return (s1 + s2) / 2

    def consistency_loss(self, model, idx, rnd):
        dev = self.device
        N = self.cfg.distill_base_steps
        x0, noise = self.latents[idx], rnd["noise"].to(dev)
        text, null = self._text(idx, rnd)
        n = torch.floor(rnd["u_grid"].to(dev) * N) + 1  # (b,) in 1..N
        t_hi, t_lo = n / N, (n - 1) / N
        x_hi = interpolate(x0, noise, t_hi)
        view = (-1, 1, 1, 1)
        with torch.no_grad():
            v = guided_velocity(self.teacher, x_hi, t_hi, text, null, self.w, self.interval)
            x_lo = x_hi - (1.0 / N) * v  # one guided teacher Euler step toward the data
            f_target = x_lo - t_lo.view(view) * self.ema(x_lo, t_lo, *text).float()
        f = x_hi - t_hi.view(view) * model(x_hi, t_hi, *text).float()
        return F.mse_loss(f, f_target), {}

    # ---- validation, samples, export -----------------------------------------------------
    def _student_latents(self, net, noise, text, steps: int) -> torch.Tensor:
        ts = flow_schedule(steps)
        d_of = step_size_lookup(ts) if has_step_size_input(net) else None

        def model_fn(x, t):
            return net(x, t, *text, **({} if d_of is None else {"d": d_of(t)})).float()

        return sample_euler(model_fn, noise, ts)

    @torch.no_grad()
    def _reference(self):
        """The teacher's latents for the first VAL_IMAGES validation prompts at its default
        sampler (DPM-Solver++(2M) when that is stochastic), steps and guidance, from fixed noise
        (computed once)."""
        if self._val is None:
            n = min(VAL_IMAGES, len(self.val_cap))
            cid = self.val_cap[:n]
            text, null = self.text(cid), self.text(torch.full_like(cid, self.null_id))
            noise = torch.randn((n, *self.latents.shape[1:]), generator=torch.Generator().manual_seed(4321)).to(self.device)
            d = {**DEFAULT_SETTINGS, **self.teacher_config.get("defaults", {})}
            shift = float(self.teacher_config.get("schedule_shift", 1.0))

            def teacher_fn(x, t):
                return guided_velocity(self.teacher, x, t, text, null, self.w, self.interval)

            # the student learns the teacher's flow (an ODE): a stochastic default sampler's
            # samples are not what it can match from the same noise, so the reference is then
            # the teacher's ODE solve with DPM-Solver++(2M) at the same steps
            sampler = "dpmpp2m" if d["sampler"] in STOCHASTIC else d["sampler"]
            ref = SAMPLERS[sampler](teacher_fn, noise, flow_schedule(int(d["steps"]), shift))
            self._val = (ref, noise, text)
        return self._val

    @torch.no_grad()
    def validate(self, ema) -> dict:
        """val_mse_<k>step: mean squared latent distance between the EMA student's k-step Euler
        samples (k = 1 and the target K) and the teacher's own samples of the same noise and
        prompts; val_loss is the K-step one. Deterministic."""
        ref, noise, text = self._reference()
        out = {}
        for k in sorted({1, self.cfg.distill_steps}):
            out[f"val_mse_{k}step"] = F.mse_loss(self._student_latents(ema, noise, text, k), ref).item()
        out["val_loss"] = out[f"val_mse_{self.cfg.distill_steps}step"]
        return out

    def folder_config(self) -> dict:
        return distilled_config(self.cfg, self.teacher_config, self.teacher_folder, self.w, self.interval)

    def pipeline(self, ema) -> DiffusionPipeline:
        return DiffusionPipeline(ema, self.ae, self.folder_config(), device=self.device)

    @torch.no_grad()
    def samples(self, ema, step):
        prompts = (self.cfg.sample_prompts or self.val_prompts)[:16]
        pipe = self.pipeline(ema)
        ims = pipe.sample(requests(prompts, list(range(len(prompts)))), pipe.settings(style="none")).images
        ema.train(False)
        return grid(ims, cols=8)

    def export(self, ema, folder: Path, extra: dict) -> Path:
        return save_diffusion_folder(folder, ema, self.ae, {**self.folder_config(), **extra},
                                     dtype=dtype_of(self.cfg.save_dtype))
