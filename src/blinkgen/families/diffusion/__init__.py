"""The diffusion family: text -> MiniLM -> DiT velocity field -> ODE solver over KL-autoencoder
latents -> decoder -> pixels. pipeline.py (generation), folder.py (the model folder), tasks.py
(training the autoencoder and the DiT), distill.py (few-step distillation of a trained model)."""
from .. import Family

FAMILY = Family(
    name="diffusion",
    summary="DiT over autoencoder latents, flow matching, ODE samplers",
    pipeline="blinkgen.families.diffusion.pipeline:DiffusionPipeline",
    # "shortcut": a step-size-conditioned model made by `blinkgen distill` (same samplers; Euler
    # and Euler ancestral take jumps of the step size, the others run its d = 0 flow)
    samplers={"diffusion": ("euler", "heun", "dpmpp2m", "euler_a"), "shortcut": ("euler", "heun", "dpmpp2m", "euler_a")},
    tasks={"diffusion": "blinkgen.families.diffusion.tasks:DiffusionTask",
           "autoencoder": "blinkgen.families.diffusion.tasks:AutoencoderTask",
           "lora": "blinkgen.families.diffusion.lora_task:DiffusionLoRATask",
           "distill": "blinkgen.families.diffusion.distill:DistillTask"},
    default_task="diffusion",
    prerequisites={"diffusion": "autoencoder"},
    aliases={"autoencoder": "autoencoder"},
    tiny="blinkgen.families.diffusion.folder:tiny",
    tiny_modes={"shortcut": {"shortcut": True}},
)
