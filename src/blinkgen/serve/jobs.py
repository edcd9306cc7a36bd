"""Jobs: one request's images, their state, progress and results; plus the store of finished PNGs
that `response_format="url"` links point at.

Memory: everything a server keeps after answering is bounded twice, by count/bytes and by age.
Finished jobs (kept so clients can poll their results) are dropped oldest-first past
`max_finished` jobs or `max_images` images or `max_bytes` PNG bytes, and after `ttl_s`; url
images likewise in the ImageStore. Only images that have a link live in the ImageStore (those of
`response_format="url"` answers and of /v1/jobs jobs, whose event streams link): b64_json answers
never get a link, so they can never push a live link out before its TTL. Both drop from the front of an insertion-ordered dict, so the
cost is O(1) per item and the caps hold whether or not anyone ever reads again. Jobs of the
synchronous images endpoint are discarded as soon as they are answered (no client has their id).

Threading: the batcher's worker thread and the event loop both touch jobs, so every mutation and
every snapshot happens under the store's single lock. Watchers (SSE streams, waiting HTTP
handlers) are woken with `loop.call_soon_threadsafe(event.set)`: the worker never blocks on a
client, and a slow client only ever sees the latest state (events coalesce instead of queueing).
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

STATES = ("queued", "running", "done", "failed", "cancelled")
FINAL = frozenset({"done", "failed", "cancelled"})


@dataclass
class ImageResult:
    seed: int
    png: bytes
    token: str | None  # capability in the image's URL (unguessable, so <img src> needs no API key); None: no link

    @property
    def nbytes(self) -> int:
        return len(self.png)


@dataclass(eq=False)  # identity semantics: jobs are dict keys and set members
class Job:
    """One request: n images of one prompt with seeds seed, seed+1, ... and one settings."""

    id: str
    model: str
    prompt: str
    seeds: list[int]
    settings: Any  # the model's blinkgen.pipeline.Settings (frozen); equal settings share batches
    response_format: str
    deadline: float  # time.monotonic() after which the job fails with a timeout
    submitted: float = field(default_factory=time.monotonic)
    created: int = field(default_factory=lambda: int(time.time()))
    state: str = "queued"
    error: dict | None = None
    results: list[ImageResult | None] = field(default_factory=list)
    next_index: int = 0  # next image to hand to a batch (images are scheduled in seed order)
    running: int = 0  # images of this job in the batch now running
    step: int = 0
    preview: str | None = None  # data:image/png;base64,... of the running image, low resolution
    batch_sizes: list[int] = field(default_factory=list)  # diagnostics: sizes of batches it joined
    watchers: set = field(default_factory=set)  # {(loop, asyncio.Event)}
    finished_at: float | None = None
    owner: str | None = None  # owner_id() of the creating API key; None when the server has no keys
    linked: bool = True  # its images get url links (kept in the ImageStore); False for b64_json answers
    size: str | None = None  # "WxH" of its images
    # editing (POST /v1/images/edits and /variations): the decoded upload, its mask (an "L" image,
    # 255 = repaint), the strength; dropped when the job finishes. revised_prompt: the prompt a
    # variation used (the image's best caption), shown as OpenAI's `revised_prompt`.
    init_image: Any = None
    mask: Any = None
    strength: float | None = None
    revised_prompt: str | None = None
    total: int = 0  # steps of the batch now running, as its callback reports them (0: settings.steps)
    priority: int = 0  # higher first, within the batcher's fairness (batcher.effective_priority)
    queued_since: float = field(default_factory=time.monotonic)  # submitted, or last back from a batch
    webhook: Any = None  # webhooks.Webhook to call when the job reaches a final state
    # variation seeds (generations and jobs): image i's noise mixes in that of variation_seeds[i]
    # (variation_seed, +1, ... as in the CLI) at variation_strength; None: no variation
    variation_seeds: list[int] | None = None
    variation_strength: float | None = None

    def __post_init__(self):
        self.results = [None] * len(self.seeds)

    @property
    def n(self) -> int:
        return len(self.seeds)

    @property
    def images_done(self) -> int:
        return sum(r is not None for r in self.results)

    @property
    def unscheduled(self) -> int:
        return 0 if self.state in FINAL else self.n - self.next_index

    @property
    def alive(self) -> bool:
        return self.state not in FINAL

    def key(self) -> tuple:
        """Jobs with equal keys may share a model call: the same model and equal settings."""
        return (self.model, self.settings)

    def notify(self) -> None:
        for loop, event in list(self.watchers):
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # loop closed (server stopping): nobody left to wake
                self.watchers.discard((loop, event))


class JobStore:
    """All jobs by id, with the lock that guards them. Finished jobs are kept for `ttl_s` so
    clients can still read their results -- and at most `max_finished` jobs, `max_images`
    images and `max_bytes` PNG bytes of them, oldest dropped first -- then forgotten (404)."""

    def __init__(self, ttl_s: float = 3600.0, max_finished: int = 2000, url_ttl_s: float = 3600.0,
                 max_images: int = 4096, on_final=None, max_bytes: int = 512 * 2**20):
        self.lock = threading.RLock()
        self.jobs: dict[str, Job] = {}
        self.ttl_s, self.max_finished = ttl_s, max_finished
        self.max_images, self.max_bytes = max_images, max_bytes
        self.images = ImageStore(url_ttl_s, max_images, max_bytes)
        self.on_final = on_final or (lambda state: None)
        self.on_job_final = None  # callable(job), under the lock, once per job (webhooks.Dispatcher)
        self._finished: OrderedDict[str, Job] = OrderedDict()  # in finishing order = expiry order
        self._finished_images = 0
        self._finished_bytes = 0

    def new_id(self) -> str:
        return "job_" + secrets.token_hex(12)

    def add(self, job: Job) -> None:
        with self.lock:
            self._evict()
            self.jobs[job.id] = job

    def get(self, job_id: str) -> Job | None:
        with self.lock:
            self._evict()
            return self.jobs.get(job_id)

    def discard(self, job: Job) -> None:
        """Forget a finished job now (its results were handed over and nobody can ask again)."""
        with self.lock:
            if self.jobs.get(job.id) is job and not job.alive:
                self._drop(job)

    def finish(self, job: Job, state: str, error: dict | None = None) -> bool:
        """Move a live job to a final state; False if it had already finished."""
        with self.lock:
            if not job.alive:
                return False
            job.state, job.error, job.running = state, error, 0
            job.finished_at = time.monotonic()
            job.preview = None
            job.init_image = job.mask = None  # an upload is held only while its job can use it
            if self.jobs.get(job.id) is job:
                self._finished[job.id] = job
                self._finished_images += job.images_done
                self._finished_bytes += sum(r.nbytes for r in job.results if r is not None)
            self.on_final(state)
            if self.on_job_final is not None:
                self.on_job_final(job)
            job.notify()
            self._evict()
            return True

    def add_result(self, job: Job, index: int, seed: int, png: bytes) -> None:
        with self.lock:
            token = self.images.put(png) if job.linked else None  # no link, no place in the link store
            job.results[index] = ImageResult(seed, png, token)

    def stats(self) -> dict:
        """Sizes of what is kept, for tests and the soak benchmark."""
        with self.lock:
            return {"jobs": len(self.jobs), "finished_jobs": len(self._finished),
                    "finished_images": self._finished_images, "finished_bytes": self._finished_bytes,
                    **self.images.stats()}

    def _drop(self, job: Job) -> None:
        self.jobs.pop(job.id, None)
        if self._finished.pop(job.id, None) is not None:
            self._finished_images -= job.images_done
            self._finished_bytes -= sum(r.nbytes for r in job.results if r is not None)

    def _evict(self) -> None:
        now = time.monotonic()
        while self._finished:
            oldest = next(iter(self._finished.values()))
            if (len(self._finished) > self.max_finished or self._finished_images > self.max_images
                    or self._finished_bytes > self.max_bytes or now - oldest.finished_at > self.ttl_s):
                self._drop(oldest)
            else:
                break


class ImageStore:
    """PNG bytes behind expiring URL tokens (OpenAI's `url` links also expire).

    Why the URL carries no API key check: the token is 192 random bits (`secrets.token_urlsafe`),
    so the link itself is the capability -- it can only be learnt from the owner's response or
    job, which other keys cannot read -- and `<img src>`, browsers and OpenAI-style clients fetch
    it without an Authorization header (OpenAI's own image URLs are bearer-less signed links).
    The link expires after `ttl_s`, and the oldest links are dropped past `max_images` images or
    `max_bytes` bytes (`--keep-images`, `--keep-mb`: caps on LINKED images only), so a busy
    server cannot grow this store without bound."""

    def __init__(self, ttl_s: float, max_images: int, max_bytes: int = 512 * 2**20):
        self.ttl_s, self.max_images, self.max_bytes = ttl_s, max_images, max_bytes
        self._items: OrderedDict[str, tuple[bytes, float]] = OrderedDict()  # insertion = expiry order
        self._bytes = 0
        self._lock = threading.Lock()

    def put(self, png: bytes) -> str:
        token = secrets.token_urlsafe(24)
        now = time.monotonic()
        with self._lock:
            self._items[token] = (png, now + self.ttl_s)
            self._bytes += len(png)
            self._evict(now)
        return token

    def get(self, token: str) -> bytes | None:
        with self._lock:
            self._evict(time.monotonic())
            item = self._items.get(token)
            return None if item is None else item[0]

    def stats(self) -> dict:
        with self._lock:
            return {"url_images": len(self._items), "url_bytes": self._bytes}

    def _evict(self, now: float) -> None:
        """Drop expired links and the oldest past the caps (the ttl is constant, so the oldest
        link is also the first to expire)."""
        while self._items:
            png, expires = next(iter(self._items.values()))
            if len(self._items) > self.max_images or self._bytes > self.max_bytes or now > expires:
                self._items.popitem(last=False)
                self._bytes -= len(png)
            else:
                break


def image_datum(r: ImageResult, fmt: str, base_url: str, prompt: str, revised_prompt: str | None = None) -> dict:
    """One entry of an OpenAI `data` list, plus the seed (an extra field clients may ignore)."""
    d: dict[str, Any] = {"seed": r.seed, "revised_prompt": revised_prompt}
    if fmt == "b64_json":
        d["b64_json"] = base64.b64encode(r.png).decode("ascii")
    elif r.token is None:  # pragma: no cover - a job that links always has tokens (make_job)
        raise ValueError("this image has no link")
    else:
        d["url"] = f"{base_url.rstrip('/')}/images/{r.token}.png"
    return d


def owner_id(api_key: str) -> str:
    """What a job records as its owner: a hash of the key, so memory, logs and dumps never hold
    the key itself (a plain sha256 suffices: keys are long random secrets, not passwords)."""
    return hashlib.sha256(api_key.encode()).hexdigest()


def visible_to(job: Job, owner: str | None) -> bool:
    """Whether a caller (owner_id of its key, None on a server without keys) may see a job."""
    if job.owner is None or owner is None:
        return job.owner is None and owner is None
    return hmac.compare_digest(job.owner, owner)


def snapshot(job: Job, base_url: str, queue_position: int | None, with_images: bool = True) -> dict:
    """The job as the API shows it (call under the store lock)."""
    s = job.settings
    done = job.images_done
    steps = job.total or s.steps  # an edit's batch runs fewer (or, mixed with others, more) steps
    frac = (done + (job.running * job.step / max(steps, 1) if job.state == "running" else 0)) / job.n
    out = {
        "id": job.id, "object": "image.job", "state": job.state, "created": job.created,
        "model": job.model, "prompt": job.prompt,
        "settings": s.to_dict() if hasattr(s, "to_dict") else {"steps": s.steps, "guidance": s.guidance,
                                                                  "sampler": s.sampler},
        "priority": job.priority,
        "queue_position": queue_position if job.state == "queued" else None,
        "progress": {"step": job.step, "steps": steps, "images_done": done, "images_total": job.n,
                     "fraction": round(1.0 if job.state == "done" else min(frac, 1.0), 4)},
        "error": job.error, "batch_sizes": list(job.batch_sizes),
    }
    if with_images:
        fmt = job.response_format
        out["data"] = [image_datum(r, fmt, base_url, job.prompt, job.revised_prompt)
                       for r in job.results if r is not None]
    if job.revised_prompt is not None:
        out["revised_prompt"] = job.revised_prompt
    return out


class Watch:
    """`async with Watch(job, lock) as w: await w.wait(t)` wakes on every change of the job."""

    def __init__(self, job: Job, lock):
        self.job, self.lock = job, lock
        self.event = asyncio.Event()
        self.entry = (asyncio.get_running_loop(), self.event)

    async def __aenter__(self):
        with self.lock:
            self.job.watchers.add(self.entry)
        return self

    async def __aexit__(self, *exc):
        with self.lock:
            self.job.watchers.discard(self.entry)

    async def wait(self, timeout: float | None) -> bool:
        """True if woken by a change, False on timeout."""
        try:
            await asyncio.wait_for(self.event.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        self.event.clear()
        return True
