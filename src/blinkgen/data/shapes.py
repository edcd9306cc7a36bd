"""The procedural `shapes` dataset: coloured shapes with captions from a tiny grammar.

Why: a text-to-image model's compositional skill (colour binding, counting, spatial relations)
is hard to measure on natural images. Here every caption is generated from a `Scene`, the parser
reads any caption back into that `Scene`, and `blinkgen.eval.shapes_check` verifies an image
against it exactly — so "did the model draw two small red squares left of ..." has one answer.

Grammar (lower case; "a"/"an", "grey"/"gray", "to the left of", a final "." are also read):

    caption  := objects [" on a " BACKGROUND " background"]
    objects  := group | group " and " group | single " " RELATION " " single
    group    := single | ("two" | "three") [" " SIZE] " " COLOUR " " SHAPE "s"
    single   := "a" [" " SIZE] " " COLOUR " " SHAPE
    RELATION := "left of" | "right of" | "above" | "below"

At most three objects in all; two groups differ in colour or shape. Examples:
"a large red circle", "two green squares on a black background",
"a small blue square left of a large yellow triangle on a gray background".
What a caption leaves out (size, background) the checker does not verify.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace

import numpy as np
import torch
from PIL import Image, ImageDraw

from blinkgen.checks import as_int
from blinkgen.data.types import ImageCaptionSet, LoadReport
from blinkgen.errors import UserInputError
from blinkgen.seeds import check_seed

# Saturated hues spaced around the colour wheel. Chosen (by script, see tests) so that an
# anti-aliased or blurred edge — a blend of a shape colour with a background — stays nearer the
# blend line of its own colour than of any other, so the checker can tell the colours apart.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 20, 30), "orange": (255, 125, 0), "yellow": (240, 220, 10),
    "green": (20, 170, 20), "cyan": (0, 210, 230), "blue": (20, 50, 235),
    "purple": (130, 20, 210), "pink": (250, 90, 190),
}
# Achromatic, so no shape colour is ever mistaken for the background.
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (255, 255, 255), "black": (0, 0, 0), "gray": (128, 128, 128),
}
SHAPES = ("circle", "square", "triangle")
SIZES = ("small", "large")
RELATIONS = ("left of", "right of", "above", "below")
SUPPORTED_SIZES = (32, 64, 128)  # 128: the upscaler's training targets
MAX_OBJECTS = 3
NUMBERS = {1: "a", 2: "two", 3: "three"}
# Object extent (bounding-box side) as a fraction of the image side. The gap between the two
# ranges is what lets the checker read size by thresholding at SIZE_THRESHOLD.
EXTENT = {"small": (0.20, 0.24), "large": (0.34, 0.40)}
SIZE_THRESHOLD = 0.29
SUPERSAMPLE = 4  # draw at 4x and box-downsample: anti-aliased edges, like real images


@dataclass(frozen=True)
class Obj:
    """A group of `count` identical objects; size None = caption does not say."""

    colour: str
    shape: str
    size: str | None = None
    count: int = 1

    @property
    def key(self) -> tuple[str, str]:
        """(colour, shape): what tells two groups apart."""
        return self.colour, self.shape


@dataclass(frozen=True)
class Scene:
    """What a caption asserts. relation relates objects[0] to objects[1] (both count 1)."""

    objects: tuple[Obj, ...]
    relation: str | None = None
    background: str | None = None

    def validate(self) -> "Scene":
        """Raise ValueError unless the scene is one the grammar can express."""
        if not 1 <= len(self.objects) <= 2:
            raise ValueError(f"a scene has 1 or 2 object groups, got {len(self.objects)}")
        for o in self.objects:
            if o.colour not in COLOURS or o.shape not in SHAPES or o.size not in (None, *SIZES):
                raise ValueError(f"unknown attribute in {o}")
            if not 1 <= o.count <= MAX_OBJECTS:
                raise ValueError(f"count must be 1..{MAX_OBJECTS}, got {o.count}")
        if sum(o.count for o in self.objects) > MAX_OBJECTS:
            raise ValueError(f"at most {MAX_OBJECTS} objects in a scene")
        if len(self.objects) == 2 and self.objects[0].key == self.objects[1].key:
            raise ValueError("two groups must differ in colour or shape")
        if self.relation is not None:
            if self.relation not in RELATIONS:
                raise ValueError(f"unknown relation {self.relation!r}")
            if len(self.objects) != 2 or any(o.count != 1 for o in self.objects):
                raise ValueError("a relation needs exactly two single objects")
        if self.background not in (None, *BACKGROUNDS):
            raise ValueError(f"unknown background {self.background!r}")
        return self


# ----------------------------------------------------------------------------- captions
def _group_text(o: Obj) -> str:
    words = ([o.size] if o.size else []) + [o.colour, o.shape + ("s" if o.count > 1 else "")]
    if o.count == 1:
        return ("an " if words[0][0] in "aeiou" else "a ") + " ".join(words)
    return NUMBERS[o.count] + " " + " ".join(words)


def describe(scene: Scene) -> str:
    """The canonical caption of a scene; parse_caption(describe(s)) == s."""
    scene.validate()
    parts = [_group_text(o) for o in scene.objects]
    text = (f" {scene.relation} " if scene.relation else " and ").join(parts)
    if scene.background:
        text += f" on a {scene.background} background"
    return text


# each relation's opposite: "A left of B" is "B right of A"
OPPOSITE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}


def paraphrases(scene: Scene) -> list[str]:
    """Captions for one fully specified image: canonical, without background, and for relations
    the mirrored sentence. All parse, and the checker accepts the image for each of them."""
    out = [describe(scene)]
    if scene.background:
        out.append(describe(replace(scene, background=None)))
    if scene.relation:
        a, b = scene.objects
        out.append(describe(Scene((b, a), OPPOSITE[scene.relation], scene.background)))
    return out


_COUNT_WORDS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3}
_GROUP = re.compile(r"^(a|an|one|two|three) (?:(small|large) )?([a-z]+) ([a-z]+?)(s?)$")


def _parse_group(text: str) -> Obj:
    m = _GROUP.match(text)
    if not m:
        raise ValueError(f"cannot read object {text!r}")
    num, size, colour, shape, plural = m.groups()
    count = _COUNT_WORDS[num]
    if colour not in COLOURS:
        raise ValueError(f"unknown colour {colour!r}; known: {', '.join(COLOURS)}")
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; known: {', '.join(SHAPES)}")
    if (count > 1) != bool(plural):
        raise ValueError(f"number and noun disagree in {text!r}")
    return Obj(colour, shape, size, count)


def parse_caption(text: str) -> Scene:
    """Read a caption of the grammar above back into a Scene; ValueError on anything else."""
    t = " ".join(text.strip().lower().rstrip(".").split()).replace("grey", "gray")
    t = t.replace("to the left of", "left of").replace("to the right of", "right of")
    background = None
    m = re.match(r"^(.*) on an? ([a-z]+) background$", t)
    if m:
        t, background = m.groups()
        if background not in BACKGROUNDS:
            raise ValueError(f"unknown background {background!r}; known: {', '.join(BACKGROUNDS)}")
    relation = None
    for rel in RELATIONS:
        left, sep, right = t.partition(f" {rel} ")
        if sep:
            relation, parts = rel, [left, right]
            break
    else:
        parts = t.split(" and ")
    if not 1 <= len(parts) <= 2:
        raise ValueError(f"cannot read caption {text!r}")
    scene = Scene(tuple(_parse_group(p) for p in parts), relation, background)
    try:
        return scene.validate()
    except ValueError as e:
        raise ValueError(f"caption {text!r}: {e}") from None


# ----------------------------------------------------------------------------- sampling
def sample_scene(rng: np.random.Generator) -> Scene:
    """A fully specified random scene: 40% one object, 20% a counted group, 15% two groups,
    25% a relation — so counting and relations each get enough training signal."""
    def obj(count=1, avoid=None):
        while True:
            o = Obj(str(rng.choice(list(COLOURS))), str(rng.choice(SHAPES)), str(rng.choice(SIZES)), count)
            if avoid is None or o.key != avoid.key:
                return o
    bg = str(rng.choice(list(BACKGROUNDS)))
    kind = rng.random()
    if kind < 0.40:
        return Scene((obj(),), None, bg)
    if kind < 0.60:
        return Scene((obj(int(rng.integers(2, MAX_OBJECTS + 1))),), None, bg)
    if kind < 0.75:
        a = obj(int(rng.integers(1, MAX_OBJECTS)))
        return Scene((a, obj(int(rng.integers(1, MAX_OBJECTS - a.count + 1)), avoid=a)), None, bg)
    a = obj()
    return Scene((a, obj(avoid=a)), str(rng.choice(RELATIONS)), bg)


SCENE_KINDS = ("single", "counted", "two-groups", "relation")  # sample_scene's four kinds, in its order


def scene_kind(scene: Scene) -> str:
    """Which of sample_scene's kinds a scene is (SCENE_KINDS): a relation between two objects, one
    object, one counted group (two or more of one object), or two groups side by side."""
    if scene.relation is not None:
        return "relation"
    if len(scene.objects) == 1:
        return "single" if scene.objects[0].count == 1 else "counted"
    return "two-groups"


# ----------------------------------------------------------------------------- rendering
def relation_offsets(relation: str, a: tuple[float, float], b: tuple[float, float]) -> tuple[float, float]:
    """(main, cross) offsets of centres a -> b for "a RELATION b": main > 0 means the relation
    points the right way; |cross| is the displacement across it. Shared by the renderer and the
    checker so both read a relation the same way (image y grows downwards)."""
    dx, dy = b[0] - a[0], b[1] - a[1]
    return {"left of": (dx, dy), "right of": (-dx, dy), "above": (dy, dx), "below": (-dy, dx)}[relation]


def _relation_holds(rel: str, a: tuple, b: tuple):
    """a, b = (x0, y0, extent), numbers or arrays (then elementwise). Rendered relations are
    unambiguous: the main-axis offset of the centres is at least twice the cross-axis offset (the
    checker only asks for more than once)."""
    main, cross = relation_offsets(rel, (a[0] + a[2] / 2, a[1] + a[2] / 2), (b[0] + b[2] / 2, b[1] + b[2] / 2))
    return (main > 0) & (abs(cross) * 2 <= main)


def _layout(extents: list[int], size: int, relation: str | None, rng: np.random.Generator) -> list[tuple]:
    """Top-left corners, one box at a time, each drawn uniformly from the corners still free:
    boxes keep a gap (so blur cannot merge them) and a relation holds. Restart if a box finds no
    room (only crowded scenes: three large objects in 32 px)."""
    gap, margin = max(2, round(0.05 * size)), 1
    for _ in range(1000):
        boxes: list[tuple] = []
        for e in extents:
            ys, xs = np.mgrid[margin:size - margin - e + 1, margin:size - margin - e + 1]
            free = np.ones(xs.shape, dtype=bool)
            for bx, by, be in boxes:
                free &= ~((xs < bx + be + gap) & (bx < xs + e + gap) & (ys < by + be + gap) & (by < ys + e + gap))
            if relation is not None and boxes:
                free &= _relation_holds(relation, boxes[0], (xs, ys, e))  # elementwise over corners
            if not free.any():
                break
            i = int(rng.choice(np.flatnonzero(free)))
            boxes.append((int(xs.flat[i]), int(ys.flat[i]), e))
        else:
            return boxes
    raise RuntimeError(f"no layout found for extents {extents} at size {size}")  # a bug, not input


def _draw(draw: ImageDraw.ImageDraw, shape: str, box: tuple, colour: tuple) -> None:
    x, y, e = (v * SUPERSAMPLE for v in box)
    if shape == "circle":
        draw.ellipse([x, y, x + e - 1, y + e - 1], fill=colour)
    elif shape == "square":
        draw.rectangle([x, y, x + e - 1, y + e - 1], fill=colour)
    else:  # isosceles triangle, apex up, filling its square bounding box
        draw.polygon([(x + e / 2, y), (x + e - 1, y + e - 1), (x, y + e - 1)], fill=colour)


def resolve(scene: Scene, rng: np.random.Generator) -> Scene:
    """Fill what the caption left open (sizes, background) at random."""
    objs = tuple(o if o.size else replace(o, size=str(rng.choice(SIZES))) for o in scene.objects)
    return replace(scene, objects=objs, background=scene.background or str(rng.choice(list(BACKGROUNDS))))


def render(scene: Scene, size: int, rng: np.random.Generator) -> np.ndarray:
    """Draw a scene as a (size, size, 3) uint8 array. Unspecified attributes are drawn at random;
    object extents jitter within their size class and positions are random, so one caption
    stands for many images."""
    if size not in SUPPORTED_SIZES:
        raise UserInputError(f"shapes size must be one of {SUPPORTED_SIZES}, got {size}")
    scene = resolve(scene.validate(), rng)
    flat = [o for o in scene.objects for _ in range(o.count)]
    extents = [int(round(rng.uniform(*EXTENT[o.size]) * size)) for o in flat]
    boxes = _layout(extents, size, scene.relation, rng)
    s = size * SUPERSAMPLE
    img = Image.new("RGB", (s, s), BACKGROUNDS[scene.background])
    draw = ImageDraw.Draw(img)
    for o, box in zip(flat, boxes):
        _draw(draw, o.shape, box, COLOURS[o.colour])
    return np.array(img.resize((size, size), Image.Resampling.BOX))  # a writable copy


def make_shapes(n: int, seed: int = 0, size: int = 64, kinds: tuple[str, ...] | None = None) -> ImageCaptionSet:
    """n procedural images with captions. Sample i depends only on (seed, i), so a smaller n is
    a prefix of a larger one and shards can be generated independently. `kinds` (a subset of
    SCENE_KINDS; None = all) keeps only scenes of those kinds: sample i redraws from its own
    generator until one matches (the data spec 'shapes:N:relation,counted'), so a set that spends
    its images on the scenes a model fails is as reproducible as the full mix; its images are
    named shapes-<seed>-<kind_kind>-<i>. UserInputError on an unknown kind."""
    n = as_int(n, "n", 0)
    seed = check_seed(seed)
    size = as_int(size, "size")
    if size not in SUPPORTED_SIZES:
        raise UserInputError(f"shapes size must be one of {SUPPORTED_SIZES}, got {size}")
    if kinds is not None:
        bad = [k for k in kinds if k not in SCENE_KINDS]
        if bad or not kinds:
            raise UserInputError(f"shapes scene kinds must be among {', '.join(SCENE_KINDS)}; got {', '.join(kinds) or 'none'}")
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    captions = []
    for i in range(n):
        rng = np.random.default_rng([int(seed), i])
        scene = sample_scene(rng)
        while kinds is not None and scene_kind(scene) not in kinds:  # the rarest kind is 15%: a few draws
            scene = sample_scene(rng)
        images[i] = render(scene, size, rng)
        captions.append(paraphrases(scene))
    tag = "" if kinds is None else "-" + "_".join(kinds)
    names = [f"shapes-{seed}{tag}-{i:06d}" for i in range(n)]
    tensor = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()  # (N, 3, H, W)
    return ImageCaptionSet(tensor, captions, names, LoadReport(loaded=n))
