"""The VAE family: a text-conditional VAE (models/cvae.py) whose prior p(z | prompt) is a learned
network; sampling draws z from the prompt's prior at a temperature and decodes it in ONE pass
(pixels, or AutoencoderKL latents then its decoder). pipeline.py (generation), folder.py (the model
folder, presets, tiny()), tasks.py (training on the negative ELBO)."""
from .. import Family

FAMILY = Family(
    name="vae",
    summary="text-conditional VAE: sample the prompt's learned prior, decode in one pass",
    pipeline="blinkgen.families.vae.pipeline:VAEPipeline",
    samplers={"vae": ("prior",)},
    tasks={"vae": "blinkgen.families.vae.tasks:CVAETask"},
    default_task="vae",
    tiny="blinkgen.families.vae.folder:tiny",
)
