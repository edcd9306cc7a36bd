"""Dynamic batching: one worker thread turns queued jobs into model calls.

Why one thread: generation is compute-bound and torch already spreads one call over every core
(and releases the GIL while it does), so two concurrent model calls would only fight for the same
cores; batching is how throughput grows. The event loop only enqueues and reads state.

How a batch is formed:
- the job with the highest effective priority (`effective_priority`: its `priority`, default 0,
  plus one level per PRIORITY_AGING_S waited since it was last served), ties going to the one
  that has waited longest, picks the settings key; only jobs with the same key (model and
  settings) join -- so priority reorders waiting jobs but never starves one;
- after the head arrives we wait up to `window_s` for company unless the batch is already full;
  the server's default window is 0 (continuous batching): under load, requests pile up while the
  previous batch runs and form the next one, so waiting only adds latency (bench/RESULTS.md);
- the batch is filled round-robin, one image per job per turn, so a request for 10 images
  cannot starve a request for 1; served jobs with images left go to the back of `pending`.
Each image carries its own seed into `Pipeline.sample`, whose contract is that image i depends
only on (model, prompt i, seed i, settings): a request's bytes do not depend on its batch-mates.

Cancel, timeout and shutdown: a dead job's images are dropped from the queue at once; a running
batch keeps going while any of its jobs is alive (the others' results are discarded) and is
aborted -- by raising from the step callback -- once none is.
"""
from __future__ import annotations

import base64
import io
import logging
import math
import threading
import time

from ..errors import UserInputError
from ..pipeline import Request
from .jobs import Job, JobStore
from .metrics import Metrics
from .schemas import UserError

log = logging.getLogger(__name__)

PREVIEW_PX = 32  # previews are thumbnails: small PNG data URLs, cheap to encode and to stream
PREVIEW_INTERVAL_S = 0.1  # at most ten preview encodes per second, however fast steps are
PRIORITY_AGING_S = 5.0  # waiting this long raises a job's priority by one level: a priority -10 job
# waits at most ~100 s behind a stream of priority 10 jobs (plus the batches running meanwhile)


def effective_priority(job: Job, now: float) -> float:
    """job.priority plus one level per PRIORITY_AGING_S since it was submitted or last came back
    from a batch. A job with images running now has waited nothing: its remaining images queue up
    when the batch ends, behind the jobs that arrived meanwhile (round-robin)."""
    if job.running:
        return float(job.priority)
    return job.priority + (now - job.queued_since) / PRIORITY_AGING_S


class _Abort(Exception):
    """Raised from the step callback to stop a batch none of whose jobs is alive any more."""


def _error(message: str, type: str, code: str) -> dict:
    return {"message": message, "type": type, "param": None, "code": code}


def edit_parameters(job: Job) -> dict:
    """What an edited image's PNG records beside the usual parameters: the edit kind and the
    strength used, the default included (pngmeta.edit_record)."""
    from ..pngmeta import edit_record

    if job.init_image is None:
        return {}
    kind = "inpaint" if job.mask is not None else ("variation" if job.revised_prompt else "img2img")
    return edit_record(kind, job.strength, job.mask is not None)


def image_request(job: Job, i: int) -> Request:
    """The pipeline request of a job's image i: its prompt and seed, the edit's image, mask and
    strength, and its variation seed, if any."""
    vseed = job.variation_seeds[i] if job.variation_seeds else None
    return Request(job.prompt, job.seeds[i], init_image=job.init_image, mask=job.mask, strength=job.strength,
                   variation_seed=vseed, variation_strength=None if vseed is None else job.variation_strength)


def warmup_request(gen) -> Request:
    """A request the model can take: a prompt, and for a model that needs an image (an upscaler)
    a white one of its input size."""
    if "init_image" not in getattr(gen, "requires", ()):
        return Request("warm-up", 0)
    from PIL import Image

    side = getattr(gen, "input_size", gen.image_size)
    return Request("warm-up", 0, init_image=Image.new("RGB", (side, side), "white"))


def preview_data_url(t) -> str:
    """(3,h,w) float tensor in [0,1] -> small PNG data URL."""
    from PIL import Image

    arr = (t.detach().float().clamp(0, 1).mul(255).round().to("cpu").byte().permute(1, 2, 0).numpy())
    im = Image.fromarray(arr)
    if max(im.size) > PREVIEW_PX:
        im = im.resize((PREVIEW_PX, PREVIEW_PX), Image.BILINEAR)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


class Batcher:
    def __init__(self, generators: dict, store: JobStore, metrics: Metrics, max_batch: int = 16,
                 window_s: float = 0.010, max_queue: int = 256, warmup: bool = True):
        self.generators, self.store, self.metrics = generators, store, metrics
        self.max_batch, self.window_s, self.max_queue = max(1, max_batch), max(0.0, window_s), max_queue
        self.cond = threading.Condition(store.lock)
        self.pending: list[Job] = []  # jobs with images not yet handed to a batch
        self.current: list[tuple[Job, int]] = []  # (job, image index) of the batch now running
        self.ready = threading.Event()
        self.warmup_error: str | None = None
        self.closing = False
        self.unloading: set[str] = set()  # models being unloaded: no new jobs, in-flight ones finish
        self.drain_deadline = math.inf
        self.sec_per_image = 0.0  # moving average, for Retry-After
        self._warmup = warmup
        self._thread = threading.Thread(target=self._run, name="blinkgen-batcher", daemon=True)
        metrics.queue_depth = self.queued_images
        metrics.running = lambda: len(self.current)

    # ---- called from the event loop ------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def queued_images(self) -> int:
        with self.cond:
            return sum(j.unscheduled for j in self.pending)

    def retry_after_s(self, extra: int = 0) -> int:
        with self.cond:
            work = self.queued_images() + len(self.current) + extra
            return int(min(300, max(1, math.ceil(work * (self.sec_per_image or 0.5)))))

    def submit(self, job: Job) -> None:
        """Admit a job or raise UserError (503 while shutting down, 429 when the queue is full)."""
        with self.cond:
            if self.closing:
                raise UserError("server is shutting down", code="shutting_down", status=503,
                                type="server_unavailable")
            if job.model not in self.generators or job.model in self.unloading:
                raise UserError(f"model {job.model!r} is being unloaded; choose another", param="model",
                                code="model_not_found")
            if job.n > self.max_queue:
                raise UserError(f"n={job.n} exceeds this server's queue of {self.max_queue} images",
                                param="n", code="invalid_n")
            depth = self.queued_images()
            if depth + job.n > self.max_queue:
                wait = self.retry_after_s(job.n)
                raise UserError(f"queue is full ({depth} images waiting); retry in about {wait} s",
                                code="queue_full", status=429, type="rate_limit_error",
                                headers={"Retry-After": str(wait)})
            self.store.add(job)
            self.pending.append(job)
            self.cond.notify_all()

    def cancel(self, job: Job, error: dict | None = None) -> bool:
        """Cancel a job (error: what its waiters are told, e.g. that it was superseded). A queued
        job leaves the queue now; a running batch stops at its next step once none of its jobs
        is alive. False if the job had already finished."""
        with self.cond:
            ok = self.store.finish(job, "cancelled", error)
            self._drop_dead()
            self.cond.notify_all()
            return ok

    def in_flight(self, model: str) -> int:
        """Jobs of `model` queued or running (what an unload waits for)."""
        with self.cond:
            return len({id(j) for j in self.pending if j.model == model and j.alive}
                       | {id(j) for j, _ in self.current if j.model == model})

    def queue_position(self, job: Job) -> int | None:
        """Waiting jobs that go before this one now (higher effective priority, or equal and
        earlier in the queue); None when it is not waiting."""
        with self.cond:
            if job not in self.pending:
                return None
            now = time.monotonic()
            mine, ahead = effective_priority(job, now), 0
            for j in self.pending:
                if j is job:
                    return ahead + sum(1 for k in self.pending[self.pending.index(job) + 1:]
                                       if effective_priority(k, now) > mine)
                ahead += effective_priority(j, now) >= mine
            return ahead

    def begin_shutdown(self, grace_s: float) -> None:
        """Stop admitting; let queued and running work finish for `grace_s`, then fail the rest."""
        with self.cond:
            if not self.closing:
                self.closing = True
                self.drain_deadline = time.monotonic() + grace_s
            self.cond.notify_all()

    def join(self, timeout: float | None = None) -> None:
        if self._thread.is_alive():
            self._thread.join(timeout)

    # ---- the worker thread ----------------------------------------------------------------
    def _run(self) -> None:
        try:
            if self._warmup:
                for name, gen in self.generators.items():
                    t = time.perf_counter()
                    gen.sample([warmup_request(gen)], gen.settings())
                    log.info("warmed up %s in %.2f s", name, time.perf_counter() - t)
        except Exception as e:  # a model that cannot sample must not report ready
            log.exception("warm-up failed")
            self.warmup_error = f"warm-up failed: {type(e).__name__}: {e}"
        else:
            self.ready.set()
        while True:
            try:
                batch = self._next_batch()
                if batch is None:
                    return
                self._execute(batch)
            except Exception:  # a bug here must fail the affected jobs loudly, not hang them
                log.exception("batcher error")
                with self.cond:
                    self._fail_all("internal error in the batcher", "internal_error", "server_error")
                    self.current = []

    def _fail_all(self, message: str, code: str, type: str = "server_unavailable") -> None:
        for j in list(self.pending) + [j for j, _ in self.current]:
            self.store.finish(j, "failed", _error(message, type, code))
        self.pending.clear()

    def _drop_dead(self) -> None:
        now = time.monotonic()
        for j in self.pending:
            if j.alive and now > j.deadline:
                self.store.finish(j, "failed", _error("request timed out", "timeout_error", "timeout"))
        self.pending = [j for j in self.pending if j.unscheduled > 0]

    def _next_batch(self) -> list[tuple[Job, int]] | None:
        with self.cond:
            while True:
                self._drop_dead()
                now = time.monotonic()
                if self.closing and (self.warmup_error or now >= self.drain_deadline):
                    self._fail_all("server shut down before the job finished", "shutting_down")
                    return None
                if self.warmup_error:
                    self._fail_all(self.warmup_error, "model_unavailable")
                    self.cond.wait(1.0)
                    continue
                if not self.pending:
                    if self.closing:
                        return None
                    self.cond.wait(1.0)
                    continue
                # the highest effective priority first; max() keeps the earliest of equals
                head = max(self.pending, key=lambda j: effective_priority(j, now))
                key = head.key()
                group = sorted((j for j in self.pending if j.key() == key),
                               key=lambda j: -effective_priority(j, now))  # stable: queue order among equals
                available = sum(j.unscheduled for j in group)
                start_at = head.submitted + self.window_s
                if available < self.max_batch and now < start_at and not self.closing:
                    self.cond.wait(start_at - now)
                    continue
                return self._take(group)

    def _take(self, group: list[Job]) -> list[tuple[Job, int]]:
        picks: list[tuple[Job, int]] = []
        while len(picks) < self.max_batch and any(j.unscheduled for j in group):
            for j in group:
                if j.unscheduled and len(picks) < self.max_batch:
                    picks.append((j, j.next_index))
                    j.next_index += 1
        served = list(dict.fromkeys(j for j, _ in picks))
        for j in served:
            j.state, j.step = "running", 0
            j.running = sum(1 for jj, _ in picks if jj is j)
            j.batch_sizes.append(len(picks))
            j.notify()
        # round-robin across batches: served jobs with images left queue up behind the others
        rest = [j for j in self.pending if j not in served]
        self.pending = rest + [j for j in served if j.unscheduled > 0]
        self.current = picks
        return picks

    def _execute(self, picks: list[tuple[Job, int]]) -> None:
        from ..pngmeta import png_bytes

        jobs = list(dict.fromkeys(j for j, _ in picks))
        first_row = {j: next(r for r, (jj, _) in enumerate(picks) if jj is j) for j in jobs}
        gen = self.generators[jobs[0].model]
        settings = jobs[0].settings
        last_preview = [0.0]

        def callback(step: int, total: int, preview=None) -> None:
            now = time.monotonic()
            urls = {}
            if preview is not None and now - last_preview[0] >= PREVIEW_INTERVAL_S:
                last_preview[0] = now
                urls = {j: preview_data_url(preview[first_row[j]]) for j in jobs if j.alive}
            with self.cond:
                for j in jobs:
                    if j.alive and now > j.deadline:
                        self.store.finish(j, "failed", _error("request timed out", "timeout_error", "timeout"))
                if self.closing and now >= self.drain_deadline:
                    self._fail_all("server shut down before the job finished", "shutting_down")
                if not any(j.alive for j in jobs):
                    raise _Abort()
                for j in jobs:
                    if j.alive:
                        j.step, j.total = step, total
                        if j in urls:
                            j.preview = urls[j]
                        j.notify()

        t0 = time.perf_counter()
        try:
            reqs = [image_request(j, i) for j, i in picks]
            images = gen.sample(reqs, settings, callback=callback).images
            # the request too: a PNG records its variation seed, so it replays anywhere (CLI, API, server)
            pngs = [png_bytes(im, {**gen.png_parameters(r.prompt, r.seed, settings, r), **edit_parameters(j)})
                    for im, r, (j, _) in zip(images, reqs, picks)]
        except _Abort:
            self._after(picks, None)
            return
        except UserInputError as e:
            self._after(picks, _error(str(e), "invalid_request_error", "invalid_settings"))
            return
        except Exception as e:  # a bug or a device failure: fail the batch loudly, keep serving
            log.exception("batch of %d failed", len(picks))
            self._after(picks, _error(f"generation failed: {type(e).__name__}: {e}", "server_error", "generation_failed"))
            return
        dt = time.perf_counter() - t0
        self.metrics.observe_batch(len(picks))
        with self.cond:
            per = dt / len(picks)
            self.sec_per_image = per if not self.sec_per_image else 0.8 * self.sec_per_image + 0.2 * per
            for (j, i), png in zip(picks, pngs):
                if j.alive:
                    self.store.add_result(j, i, j.seeds[i], png)
        self._after(picks, None)

    def _after(self, picks, error: dict | None) -> None:
        with self.cond:
            now = time.monotonic()
            for j in dict.fromkeys(j for j, _ in picks):
                last_total = j.total or j.settings.steps  # what the batch's callback reported last
                j.running, j.step, j.total, j.preview = 0, 0, 0, None
                j.queued_since = now  # back in the queue from now: it does not outrank who came meanwhile
                if error is not None:
                    self.store.finish(j, "failed", error)
                elif j.alive and j.images_done == j.n:
                    j.step = j.total = last_total  # a finished job shows its final step, k = K
                    self.store.finish(j, "done")
                else:
                    j.notify()
            self.current = []
            self.cond.notify_all()
