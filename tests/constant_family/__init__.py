"""A test-only generator family: "constant colour". A 2-layer network maps the prompt's pooled
MiniLM embedding to one RGB colour, and the image is that colour (plus a little per-seed noise).

It exists to prove that a new family is one package plus one registry entry: it trains, loads,
samples and serves through the real CLI and server, and nothing outside this package names it.
The tests register it without editing blinkgen: `blinkgen.families.register("constant",
"constant_family")` in the test process, and BLINKGEN_EXTRA_FAMILIES=constant=constant_family (with
tests/ on PYTHONPATH) for CLI and server subprocesses. A built-in family would instead add the line
`"constant": "blinkgen.families.constant"` to `blinkgen.families.BUILTIN`.

Two tasks: "constant" (one optimizer: regress each image's mean colour from a caption) and "duel",
which exercises the rest of the task protocol: two named optimizers ("critic", "colour") and a
frozen teacher whose colours the student distils.
"""
from blinkgen.families import Family

FAMILY = Family(
    name="constant",
    summary="test-only: one colour per prompt from a 2-layer network",
    pipeline="constant_family.pipeline:ConstantPipeline",
    samplers={"constant": ("flat",)},
    tasks={"constant": "constant_family.tasks:ColourTask", "duel": "constant_family.tasks:DuelTask"},
    default_task="constant",
    tiny="constant_family.folder:tiny",
)
