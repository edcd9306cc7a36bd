"""Render a labelled grid of generations for a committed prompt list, so anyone can see what a
model does. usage: python scripts/make_grid.py --model default --prompts bench/prompts/default_grid.txt \
    --out docs/default_grid.png [--seed 0] [--steps N] [--scale 2] [--overwrite]"""
import argparse
import io
import textwrap
import time
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

import blinkgen
from blinkgen.outputs import check_new, write_bytes
from blinkgen.pipeline import requests
from blinkgen.textio import read_lines


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="default")
    ap.add_argument("--prompts", default="bench/prompts/default_grid.txt")
    ap.add_argument("--out", default="docs/default_grid.png")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--scale", type=int, default=2, help="nearest-neighbour upscale for viewing")
    ap.add_argument("--cols", type=int, default=8)
    ap.add_argument("--overwrite", action="store_true", help="replace an existing --out file (else refused)")
    a = ap.parse_args()
    check_new([a.out], a.overwrite)
    prompts = read_lines(a.prompts, "prompts file")
    gen = blinkgen.load(a.model)
    t = time.perf_counter()
    s = gen.settings(steps=a.steps)
    images = gen.sample(requests(prompts, [a.seed] * len(prompts)), s).images
    dt = time.perf_counter() - t
    w = gen.image_size * a.scale
    label_h = 24
    rows = -(-len(images) // a.cols)
    sheet = Image.new("RGB", (a.cols * (w + 4) + 4, rows * (w + label_h + 4) + 4), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for i, (im, p) in enumerate(zip(images, prompts)):
        x, y = 4 + (i % a.cols) * (w + 4), 4 + (i // a.cols) * (w + label_h + 4)
        sheet.paste(im.resize((w, w), Image.NEAREST), (x, y))
        for j, line in enumerate(textwrap.wrap(p, width=w // 7)[:2]):
            draw.text((x, y + w + 1 + 11 * j), line, fill="black", font=font)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    write_bytes(a.out, buf.getvalue(), a.overwrite)
    print(f"{len(images)} images, {s.sampler} {s.steps} steps, guidance {s.guidance}, seed {a.seed}: "
          f"{dt:.1f}s ({len(images) / dt:.1f} img/s) -> {a.out}")


if __name__ == "__main__":
    main()
