"""Live generation as you type (issue 14), in the real headless Chromium, not a test.

A real server (uvicorn + the batcher, in a thread of this process, torch --threads) serves the
real page; Playwright drives Debian's /usr/bin/chromium: the Live box is ticked, then each prompt
is typed one character at a time (--char-delay-ms between keys, as a fast typist). The page
records, in the page, the time of every input event and of every image it shows; per prompt this
reports the time from the LAST keystroke to the image of the whole prompt being shown, the
requests sent, the images shown, and how many superseded requests were cancelled: counted by the
page (fetches it aborted while in flight) and by the server (jobs it cancelled because a newer
request had the same supersede key, by their state then: queued = never ran, running = stopped at
its next step). The load average is recorded around every prompt.

    python bench/bench_live.py --model RUN/model --out bench/results/live.json
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import threading
import time
from pathlib import Path

import httpx
import torch

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
PROMPTS = ["grinning face with big eyes", "red heart", "flag: Japan", "a blue square above a red circle",
           "cat with wry smile", "thumbs up", "hot beverage", "rocket"]


def serve(model: str, threads: int):
    import blinkgen
    from blinkgen.serve.app import ServeConfig, create_app
    from blinkgen.serve.commands import make_server

    torch.set_num_threads(threads)
    pipe = blinkgen.load(model)
    app = create_app({Path(model).name if Path(model).is_dir() else model: pipe}, ServeConfig(warmup=True))
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = make_server(app, "127.0.0.1", port, "warning")
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if httpx.get(base + "/ready", timeout=5).status_code == 200:
                return base, server, thread, pipe
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError("server did not become ready")


def superseded(base: str) -> dict:
    text = httpx.get(base + "/metrics", timeout=30).text
    return {m.group(1): int(m.group(2)) for m in re.finditer(r'blinkgen_jobs_superseded_total\{state="(\w+)"\} (\d+)', text)}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--prompts", nargs="*", default=PROMPTS)
    ap.add_argument("--char-delay-ms", type=float, default=120.0, help="between keystrokes (120 ms = 100 wpm)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--timeout-s", type=float, default=120.0, help="per prompt, for the final image")
    ap.add_argument("--out", required=True)
    ap.add_argument("--overwrite", action="store_true")
    args = ap.parse_args(argv)
    if Path(args.out).exists() and not args.overwrite:
        ap.error(f"{args.out} exists; pass --overwrite to replace it")
    from playwright.sync_api import sync_playwright

    base, server, thread, pipe = serve(args.model, args.threads)
    rows, t0 = [], time.perf_counter()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        page = browser.new_page()
        page.goto(base + "/")
        page.wait_for_function("document.querySelector('#model').options.length > 0", timeout=60_000)
        page.check("#liveon")
        page.evaluate("""() => { window.__keys = []; document.querySelector('#prompt').addEventListener('input',
                          () => window.__keys.push(performance.now())); }""")
        for prompt in args.prompts:
            page.fill("#prompt", "")
            page.evaluate("() => { window.__keys = []; const l = window.blinkLive; l.sent = 0; l.shown = 0; "
                          "l.superseded = 0; l.last = null; }")
            before, load = superseded(base), os.getloadavg()[0]
            page.locator("#prompt").press_sequentially(prompt, delay=args.char_delay_ms)
            page.wait_for_function("(p) => window.blinkLive.last && window.blinkLive.last.prompt === p",
                                   arg=prompt, timeout=args.timeout_s * 1000)
            time.sleep(0.3)  # let the server's counters settle (the last job has finished)
            st = page.evaluate("() => ({keys: window.__keys, live: window.blinkLive})")
            after = superseded(base)
            live = st["live"]
            row = {"prompt": prompt, "chars": len(prompt), "keystrokes_seen": len(st["keys"]),
                   "last_key_to_final_image_ms": live["last"]["at"] - st["keys"][-1],
                   "final_request_ms": live["last"]["ms"], "requests_sent": live["sent"], "images_shown": live["shown"],
                   "superseded_aborted_by_page": live["superseded"],
                   "superseded_cancelled_by_server": {k: after.get(k, 0) - before.get(k, 0) for k in set(after) | set(before)},
                   "load_average": [load, os.getloadavg()[0]]}
            rows.append(row)
            print(f"{prompt!r}: last key -> image {row['last_key_to_final_image_ms']:.0f} ms, sent {live['sent']}, "
                  f"shown {live['shown']}, superseded {live['superseded']} (server {row['superseded_cancelled_by_server']}), "
                  f"load {load:.2f}", flush=True)
        shot = Path(args.out).with_suffix(".png")
        page.screenshot(path=str(shot))
        browser.close()
    server.handle_exit(15, None)
    thread.join(30)
    lat = [r["last_key_to_final_image_ms"] for r in rows]
    out = {"what": "issue 14 live page: last keystroke -> final image, headless Chromium typing one character at a time",
           "command": "python bench/bench_live.py " + " ".join(sys.argv[1:] if argv is None else argv),
           "model": args.model, "settings": {"steps": 1, "debounce_ms": 40, "char_delay_ms": args.char_delay_ms},
           "threads": args.threads, "p50_ms": statistics.median(lat), "min_ms": min(lat), "max_ms": max(lat),
           "target_ms": 150, "superseded_aborted_by_page": sum(r["superseded_aborted_by_page"] for r in rows),
           "superseded_cancelled_by_server": {k: sum(r["superseded_cancelled_by_server"].get(k, 0) for r in rows)
                                              for k in ("queued", "running")},
           "requests_sent": sum(r["requests_sent"] for r in rows), "keystrokes": sum(r["chars"] for r in rows),
           "screenshot": shot.name, "rows": rows, "wall_s": time.perf_counter() - t0}
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"p50 last key -> final image {out['p50_ms']:.0f} ms (range {out['min_ms']:.0f}-{out['max_ms']:.0f}); "
          f"{out['requests_sent']} requests for {out['keystrokes']} keystrokes; superseded: page aborted "
          f"{out['superseded_aborted_by_page']}, server cancelled {out['superseded_cancelled_by_server']}")
    return out


if __name__ == "__main__":
    main()
