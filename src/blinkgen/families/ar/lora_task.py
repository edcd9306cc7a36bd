"""Fine-tuning an AR model folder with LoRA adapters (`blinkgen finetune`, task "lora"): next-token
training on a few captioned pictures, exactly ARTask's loss, but only the adapters on the Llama's
attention and SwiGLU projections learn (train/lora.py); the text projection, the null caption, the
tokenizer and every other Llama weight stay the base model's.

The exported "model" is the adapter folder (peft's files + blinkgen's config.json naming the base
model by the hash of its weights). The masked (parallel) mode is not fine-tuned yet: its loss needs
MaskedARTask's masking, and no masked model is shipped.
"""
from __future__ import annotations

from pathlib import Path

from ...errors import UserInputError
from ...train import lora
from ...train.task import adamw
from .folder import load_ar_model
from .pipeline import ARPipeline
from .tasks import ARTask


class ARLoRATask(ARTask):
    """cfg.base: the AR model folder to adapt; cfg.lora_rank: the adapters' rank (alpha = rank)."""

    def __init__(self, cfg, train, val, device):
        self.cfg, self.device = cfg, device
        self.base = lora.resolve_base(cfg.base)
        model, config = load_ar_model(self.base)
        if model.cfg.objective != "causal":
            raise UserInputError(f"{self.base} is a masked-mode AR model; LoRA fine-tuning takes causal ones only")
        if model.cfg.tokenizer.image_size != cfg.size:
            raise UserInputError(f"the base model makes {model.cfg.tokenizer.image_size}px images; "
                                 f"fine-tune it at size={model.cfg.tokenizer.image_size}, not {cfg.size}")
        model = model.to(device)
        self.model = lora.wrap(model, "ar", cfg.lora_rank)  # only the adapters train
        self._prepare(model.tokenizer, train, val)
        self.concept = list(dict.fromkeys(c[0] for c in train.captions + val.captions))

    def optimizers(self, model, cfg, device):
        return {"model": adamw(lora.trainable(model), cfg, device)}

    def pipeline(self, ema) -> ARPipeline:
        return ARPipeline(lora.folded(ema), {}, name="ar-lora-training", device=self.device)

    def export(self, ema, folder: Path, extra: dict) -> Path:
        return lora.save_adapter(ema, folder, lora.base_record(self.base, "ar"), "ar", {**extra, "concept": self.concept})
