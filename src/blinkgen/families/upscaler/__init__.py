"""The upscaler family: a 64-px image -> a conditioned x2 super-resolution network -> 128 px.
It draws nothing from text alone: every request carries the image to upscale (`init_image`).
pipeline.py (upscaling), folder.py (the model folder), tasks.py (training on 128-px data)."""
from .. import Family

FAMILY = Family(
    name="upscaler",
    summary="x2 super-resolution (64 -> 128 px): a conv net residual over bicubic",
    pipeline="blinkgen.families.upscaler.pipeline:UpscalerPipeline",
    samplers={"upscaler": ("direct",)},
    tasks={"upscaler": "blinkgen.families.upscaler.tasks:UpscalerTask"},
    default_task="upscaler",
    tiny="blinkgen.families.upscaler.folder:tiny",
)
