"""The GAN family: noise + prompt -> a text-conditional generator makes the image in ONE network
pass (pixels, or AutoencoderKL latents then its decoder). pipeline.py (generation), folder.py (the
model folder, presets, tiny()), tasks.py (adversarial training: relativistic pairing loss with
R1/R2, after R3GAN, against a text-conditional projection discriminator)."""
from .. import Family

FAMILY = Family(
    name="gan",
    summary="one-pass text-conditional generator, trained against a projection discriminator",
    pipeline="blinkgen.families.gan.pipeline:GANPipeline",
    samplers={"gan": ("onepass",)},
    tasks={"gan": "blinkgen.families.gan.tasks:GANTask"},
    default_task="gan",
    tiny="blinkgen.families.gan.folder:tiny",
)
