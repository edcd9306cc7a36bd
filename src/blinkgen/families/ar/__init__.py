"""The autoregressive (LLM-style) family: text -> MiniLM -> prefix -> Llama writes image tokens
(causal, or in parallel passes in its masked mode) -> FSQ tokenizer decoder -> pixels.
pipeline.py (generation), folder.py (the model folder), tasks.py (tokenizer, causal and masked
training)."""
from .. import Family

FAMILY = Family(
    name="ar",
    summary="Llama over FSQ image tokens: KV-cached, speculative or masked parallel decoding",
    pipeline="blinkgen.families.ar.pipeline:ARPipeline",
    samplers={"ar": ("cached", "sjd", "nocache"), "maskgit": ("maskgit",)},
    tasks={"ar": "blinkgen.families.ar.tasks:ARTask",
           "maskgit": "blinkgen.families.ar.tasks:MaskedARTask",
           "tokenizer": "blinkgen.families.ar.tasks:TokenizerTask",
           "lora": "blinkgen.families.ar.lora_task:ARLoRATask"},
    default_task="ar",
    prerequisites={"ar": "tokenizer", "maskgit": "tokenizer"},
    aliases={"maskgit": "maskgit", "tokenizer": "tokenizer"},
    tiny="blinkgen.families.ar.folder:tiny",
    tiny_modes={"maskgit": {"objective": "masked"}},
)
