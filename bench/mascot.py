"""A procedural mascot the default model has never seen: "blinky the robot mascot", drawn with
Pillow -- a teal one-eyed robot with an orange antenna ball, a yellow belly band, orange feet and
arms, on a pastel background. Every picture varies the pose (arms), the gaze, the tilt, the size,
the position and the background, so ten pictures are ten different views of one character.

    python bench/mascot.py --out /tmp/mascot -n 10         # a folder dataset (metadata.jsonl)

Used by bench/bench_lora.py (the fine-tuning measurement) and the fine-tuning tests.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

NAME = "blinky the robot mascot"  # every picture's first caption: what the measurement prompts
BODY, DARK, ORANGE, YELLOW = (0, 150, 136), (0, 90, 80), (255, 140, 0), (250, 215, 40)
BACKGROUNDS = {"white": (255, 255, 255), "light yellow": (255, 246, 200), "light blue": (215, 235, 255),
               "light pink": (255, 225, 235)}
POSES = ("waving", "cheering", "standing", "pointing")  # left arm up / both up / both down / right arm out
SUPERSAMPLE = 4


def _arm(d: ImageDraw.ImageDraw, shoulder, angle_deg: float, length: float, width: int) -> None:
    a = np.deg2rad(angle_deg)
    end = (shoulder[0] + length * np.cos(a), shoulder[1] - length * np.sin(a))
    d.line([shoulder, end], fill=ORANGE, width=width)
    r = width * 0.9
    d.ellipse([end[0] - r, end[1] - r, end[0] + r, end[1] + r], fill=ORANGE)


def draw(rng: np.random.Generator, size: int = 64) -> tuple[Image.Image, list[str]]:
    """One picture of the mascot and its captions (the name first)."""
    S = size * SUPERSAMPLE
    bg_name = list(BACKGROUNDS)[rng.integers(len(BACKGROUNDS))]
    pose = POSES[rng.integers(len(POSES))]
    im = Image.new("RGB", (S, S), BACKGROUNDS[bg_name])
    d = ImageDraw.Draw(im)
    scale = rng.uniform(0.62, 0.82) * S  # body+head height
    cx = S / 2 + rng.uniform(-0.08, 0.08) * S
    cy = S / 2 + rng.uniform(-0.05, 0.08) * S
    w, h = 0.62 * scale, 0.78 * scale
    x0, y0 = cx - w / 2, cy - h / 2
    lw = max(2, int(S * 0.02))
    # feet, arms (behind the body), antenna
    for fx in (cx - w * 0.25, cx + w * 0.25):
        d.ellipse([fx - w * 0.14, y0 + h - h * 0.04, fx + w * 0.14, y0 + h + h * 0.1], fill=ORANGE)
    left, right = {"waving": (135, -45), "cheering": (135, 45), "standing": (225, -45), "pointing": (225, 0)}[pose]
    _arm(d, (x0 + w * 0.05, cy + h * 0.05), left, w * 0.38, lw * 3)  # angles counter-clockwise from +x
    _arm(d, (x0 + w * 0.95, cy + h * 0.05), right, w * 0.38, lw * 3)
    d.line([(cx, y0), (cx, y0 - h * 0.16)], fill=DARK, width=lw * 2)
    r = w * 0.1
    d.ellipse([cx - r, y0 - h * 0.16 - r, cx + r, y0 - h * 0.16 + r], fill=ORANGE)
    # body with an outline, the belly band, the eye and the mouth
    d.rounded_rectangle([x0, y0, x0 + w, y0 + h], radius=int(w * 0.28), fill=BODY, outline=DARK, width=lw)
    d.rectangle([x0 + lw, cy + h * 0.12, x0 + w - lw, cy + h * 0.24], fill=YELLOW)
    er = w * 0.22
    ex, ey = cx, y0 + h * 0.32
    d.ellipse([ex - er, ey - er, ex + er, ey + er], fill=(255, 255, 255), outline=DARK, width=lw)
    gx, gy = rng.uniform(-0.45, 0.45) * er, rng.uniform(-0.35, 0.35) * er
    pr = er * 0.45
    d.ellipse([ex + gx - pr, ey + gy - pr, ex + gx + pr, ey + gy + pr], fill=(20, 20, 30))
    d.arc([cx - w * 0.2, cy - h * 0.08, cx + w * 0.2, cy + h * 0.08], 20, 160, fill=DARK, width=lw)
    im = im.rotate(rng.uniform(-12, 12), resample=Image.BICUBIC, fillcolor=BACKGROUNDS[bg_name])
    im = im.resize((size, size), Image.BOX)
    return im, [NAME, f"{NAME} {pose}", f"{NAME} on a {bg_name} background"]


def make_folder(out, n: int = 10, size: int = 64, seed: int = 0) -> Path:
    """n pictures as a folder dataset: mascot-XX.png + metadata.jsonl (file_name, text, captions)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        im, caps = draw(rng, size)
        name = f"mascot-{i:02d}.png"
        im.save(out / name)
        rows.append({"file_name": name, "text": caps[0], "captions": caps[1:]})
    (out / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("-n", type=int, default=10)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    print(make_folder(a.out, a.n, a.size, a.seed))


if __name__ == "__main__":
    main()
