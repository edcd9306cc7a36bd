"""Prometheus metrics in the text exposition format (version 0.0.4), written by hand.

Why not prometheus_client: the format is a few lines of text, and the handful of series below do
not justify a dependency. Everything is guarded by one lock because the worker thread and the
event loop both record; recording is a dict update, so contention is negligible.
"""
from __future__ import annotations

import threading
import time
from collections import deque

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
RATE_WINDOW_S = 60.0  # images/s is averaged over the last minute: smooth but still responsive


def _fmt_labels(labels: tuple[tuple[str, str], ...]) -> str:
    if not labels:
        return ""
    esc = lambda v: str(v).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')  # noqa: E731
    return "{" + ",".join(f'{k}="{esc(v)}"' for k, v in labels) + "}"


def _fmt_num(v: float) -> str:
    return repr(float(v)) if not float(v).is_integer() else str(int(v))


class _Histogram:
    def __init__(self, buckets):
        self.buckets = tuple(buckets)
        self.counts = [0] * len(self.buckets)
        self.sum = 0.0
        self.count = 0

    def observe(self, v: float) -> None:
        self.sum += v
        self.count += 1
        for i, b in enumerate(self.buckets):
            if v <= b:
                self.counts[i] += 1

    def lines(self, name: str, labels: tuple) -> list[str]:
        out = []
        for b, c in zip(self.buckets, self.counts):
            out.append(f"{name}_bucket{_fmt_labels(labels + (('le', _fmt_num(b)),))} {c}")
        out.append(f"{name}_bucket{_fmt_labels(labels + (('le', '+Inf'),))} {self.count}")
        out.append(f"{name}_sum{_fmt_labels(labels)} {_fmt_num(self.sum)}")
        out.append(f"{name}_count{_fmt_labels(labels)} {self.count}")
        return out


class Metrics:
    """The server's series. `render()` returns the whole exposition text."""

    def __init__(self):
        self._lock = threading.Lock()
        self.requests: dict[tuple, int] = {}  # (("endpoint", e), ("status", s)) -> count
        self.latency: dict[tuple, _Histogram] = {}  # (("endpoint", e),) -> histogram
        self.batch_sizes = _Histogram(BATCH_BUCKETS)
        self.images_total = 0
        self.jobs_total: dict[tuple, int] = {}  # (("state", s),) -> finished jobs by final state
        self.superseded: dict[tuple, int] = {}  # (("state", s),) -> live jobs cancelled by a newer one, by state then
        self._recent: deque[tuple[float, int]] = deque()  # (time, images) for images/s
        self.queue_depth = lambda: 0  # set by the app: images waiting, read at scrape time
        self.running = lambda: 0
        self.kept = lambda: {}  # set by the app: JobStore.stats(), what the server holds after answering

    def observe_request(self, endpoint: str, status: int, seconds: float) -> None:
        with self._lock:
            key = (("endpoint", endpoint), ("status", str(status)))
            self.requests[key] = self.requests.get(key, 0) + 1
            hk = (("endpoint", endpoint),)
            self.latency.setdefault(hk, _Histogram(LATENCY_BUCKETS)).observe(seconds)

    def observe_batch(self, size: int) -> None:
        with self._lock:
            self.batch_sizes.observe(size)
            self.images_total += size
            now = time.monotonic()
            self._recent.append((now, size))
            self._prune(now)  # here too, not only at scrape time: unscraped, it would grow forever

    def _prune(self, now: float) -> None:
        while self._recent and now - self._recent[0][0] > RATE_WINDOW_S:
            self._recent.popleft()

    def observe_job_end(self, state: str) -> None:
        with self._lock:
            key = (("state", state),)
            self.jobs_total[key] = self.jobs_total.get(key, 0) + 1

    def observe_superseded(self, state: str) -> None:
        with self._lock:
            key = (("state", state),)
            self.superseded[key] = self.superseded.get(key, 0) + 1

    def images_per_second(self) -> float:
        with self._lock:
            self._prune(time.monotonic())
            return sum(n for _, n in self._recent) / RATE_WINDOW_S

    def render(self) -> str:
        ips = self.images_per_second()
        depth, running, kept = self.queue_depth(), self.running(), self.kept()
        with self._lock:
            out = ["# HELP blinkgen_requests_total HTTP requests by endpoint and status.",
                   "# TYPE blinkgen_requests_total counter"]
            out += [f"blinkgen_requests_total{_fmt_labels(k)} {v}" for k, v in sorted(self.requests.items())]
            out += ["# HELP blinkgen_request_latency_seconds HTTP request latency.",
                    "# TYPE blinkgen_request_latency_seconds histogram"]
            for k, h in sorted(self.latency.items()):
                out += h.lines("blinkgen_request_latency_seconds", k)
            out += ["# HELP blinkgen_queue_depth Images waiting to be generated.",
                    "# TYPE blinkgen_queue_depth gauge", f"blinkgen_queue_depth {depth}",
                    "# HELP blinkgen_images_running Images in the batch now running.",
                    "# TYPE blinkgen_images_running gauge", f"blinkgen_images_running {running}",
                    "# HELP blinkgen_batch_size Images per model call.",
                    "# TYPE blinkgen_batch_size histogram"]
            out += self.batch_sizes.lines("blinkgen_batch_size", ())
            out += ["# HELP blinkgen_images_generated_total Images generated.",
                    "# TYPE blinkgen_images_generated_total counter",
                    f"blinkgen_images_generated_total {self.images_total}",
                    f"# HELP blinkgen_images_per_second Images generated per second over the last {int(RATE_WINDOW_S)} s.",
                    "# TYPE blinkgen_images_per_second gauge",
                    f"blinkgen_images_per_second {_fmt_num(round(ips, 4))}",
                    "# HELP blinkgen_jobs_finished_total Jobs by final state.",
                    "# TYPE blinkgen_jobs_finished_total counter"]
            out += [f"blinkgen_jobs_finished_total{_fmt_labels(k)} {v}" for k, v in sorted(self.jobs_total.items())]
            out += ["# HELP blinkgen_jobs_superseded_total Live jobs cancelled by a newer request with their "
                    "supersede key, by their state then (queued: never ran; running: stopped at the next step).",
                    "# TYPE blinkgen_jobs_superseded_total counter"]
            out += [f"blinkgen_jobs_superseded_total{_fmt_labels(k)} {v}" for k, v in sorted(self.superseded.items())]
            if kept:  # bounded by --keep-jobs/--keep-images/--keep-mb and --url-ttl-s; watch them in soaks
                out += ["# HELP blinkgen_jobs_kept Jobs held (live, and finished ones kept for polling).",
                        "# TYPE blinkgen_jobs_kept gauge", f"blinkgen_jobs_kept {kept['jobs']}",
                        "# HELP blinkgen_images_kept Images held behind url links, and in kept finished jobs.",
                        "# TYPE blinkgen_images_kept gauge",
                        f'blinkgen_images_kept{{store="url"}} {kept["url_images"]}',
                        f'blinkgen_images_kept{{store="finished_jobs"}} {kept["finished_images"]}',
                        "# HELP blinkgen_kept_bytes PNG bytes held behind url links, and in kept finished jobs.",
                        "# TYPE blinkgen_kept_bytes gauge",
                        f'blinkgen_kept_bytes{{store="url"}} {kept["url_bytes"]}',
                        f'blinkgen_kept_bytes{{store="finished_jobs"}} {kept["finished_bytes"]}']
        return "\n".join(out) + "\n"
