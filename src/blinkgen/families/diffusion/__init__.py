"""The diffusion family: text -> MiniLM -> DiT velocity field -> ODE solver over KL-autoencoder
latents -> decoder -> pixels. pipeline.py (generation), folder.py (the model folder), tasks.py
(training the autoencoder and the DiT)."""
from .. import Family

FAMILY = Family(
    name="diffusion",
    summary="DiT over autoencoder latents, flow matching, ODE samplers",
    pipeline="blinkgen.families.diffusion.pipeline:DiffusionPipeline",
    samplers={"diffusion": ("euler", "heun", "dpmpp2m")},
    tasks={"diffusion": "blinkgen.families.diffusion.tasks:DiffusionTask",
           "autoencoder": "blinkgen.families.diffusion.tasks:AutoencoderTask",
           "lora": "blinkgen.families.diffusion.lora_task:DiffusionLoRATask"},
    default_task="diffusion",
    prerequisites={"diffusion": "autoencoder"},
    aliases={"autoencoder": "autoencoder"},
    tiny="blinkgen.families.diffusion.folder:tiny",
)
