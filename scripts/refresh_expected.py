"""Refresh the stored expected values the contract tests compare against (tests/contract/expected/).

    python scripts/refresh_expected.py --why "retrained the default model on the issue-17 recipe"
    python scripts/refresh_expected.py --why "..." --only samplers   # or --only default

This is the only writer of those files, and it refuses to run without a reason: the reason and the
date go into the file's history, so a changed expectation is always explained in the diff. Run it
when a change is meant to change images (a new default model, a sampler fix), never to make a
failing test pass without knowing why. Computed with one torch thread, as the tests run.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--why", required=True, help="what changed, and why the new values are right")
    ap.add_argument("--only", choices=["samplers", "default"], default=None)
    args = ap.parse_args(argv)
    if len(args.why.strip()) < 10:
        ap.error("--why needs a real reason (at least a few words)")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch

    torch.set_num_threads(1)  # as tests/conftest.py runs them
    sys.path.insert(0, str(TESTS))  # the test-only family, registered as in tests/conftest.py
    from blinkgen import families

    families.register("constant", "constant_family")
    spec = importlib.util.spec_from_file_location("expected_values", TESTS / "contract" / "expected_values.py")
    ev = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ev)
    if args.only in (None, "samplers"):
        ev.write(ev.SAMPLERS_FILE, ev.compute_sampler_stats(), args.why.strip(),
                 what="per-channel mean/std (0-255) of tiny random models' images, "
                      f"prompts {ev.PROMPTS} x seeds {ev.SEEDS}, {ev.TINY_STEPS} steps")
        print(ev.SAMPLERS_FILE)
    if args.only in (None, "default"):
        image, settings = ev.default_first_image()
        image.save(ev.DEFAULT_PNG)
        ev.write(ev.DEFAULT_FILE, {"weights_sha256": ev.weights_sha256(), "prompt": ev.DEFAULT_PROMPT,
                                   "seed": ev.DEFAULT_SEED, "settings": settings, "image": ev.DEFAULT_PNG.name},
                 args.why.strip(), what="the shipped default model's first image (default_first.png)")
        print(ev.DEFAULT_FILE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
