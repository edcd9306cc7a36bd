"""LoRA adapters on a pipeline (issue 13): checking an adapter against the model it was trained
on, the adapter-merged network a sampler runs, merged model folders and pipelines with an adapter
as their default. A mixin of `pipeline.Pipeline`; the adapter files themselves (peft's format,
the base-model hash, the merge cache) are train/lora.py's."""
from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path

from .errors import UserInputError


class LoraMixin:
    """The LoRA methods of `Pipeline`. The family names its adapted network in `lora_network`
    (an attribute name, or None when it takes no adapter) and lists "lora" in `supports`."""

    def _check_lora(self, s: Settings) -> Settings:
        """lora -> the adapter's resolved folder, checked against this model's weights; lora_scale
        -> a float (1.0 when lora is set alone). UserInputError / ModelLoadError, one line."""
        if s.lora is None:
            if s.lora_scale is not None:
                raise UserInputError("lora_scale needs a lora adapter")
            return s
        from .train import lora

        if not isinstance(s.lora, (str, Path)):
            raise UserInputError(f"lora must be an adapter folder, got {s.lora!r}")
        adapter = lora.read_adapter(s.lora)
        lora.check_base(adapter, self.family, self.weights_sha256(), self.name)
        scale = 1.0 if s.lora_scale is None else lora.check_scale(s.lora_scale)
        return replace(s, lora=str(adapter.folder), lora_scale=scale)

    def weights_sha256(self) -> str | None:
        """The hash of this model folder's weights (train/lora.py), None for a pipeline built in
        memory; computed once."""
        if self.folder is None:
            return None
        if getattr(self, "_weights_sha256", None) is None:
            from .train.lora import weights_sha256

            self._weights_sha256 = weights_sha256(self.folder)
        return self._weights_sha256

    def network_for(self, settings: Settings):
        """The generator network to run for these settings: `lora_network`'s module, or its merged
        copy with settings.lora at settings.lora_scale (cached)."""
        base = getattr(self, self.lora_network) if self.lora_network else None
        if settings.lora is None:
            return base
        from .train import lora

        if getattr(self, "_adapters", None) is None:
            self._adapters = lora.AdapterCache()
        return self._adapters.get(base, lora.read_adapter(settings.lora), settings.lora_scale)

    def save_merged(self, path, adapter, scale: float | None = None) -> Path:
        """Write this model with a LoRA adapter folded into its network (at `scale`, default 1) as
        a full model folder at path; its config.json records the adapter under "merged_lora": its
        folder, scale, base, rank and lora_hash (train/lora_hash.py), which names the adapter when
        its folder has moved or been retrained."""
        s = self.settings(lora=str(adapter), lora_scale=scale)
        out = copy.copy(self)
        setattr(out, self.lora_network, self.network_for(s))
        from .train.lora import read_adapter
        from .train.lora_hash import adapter_sha256

        a = read_adapter(s.lora)
        out.config = {**self.config, "merged_lora": {"adapter": str(a.folder), "scale": s.lora_scale,
                                                     "base": a.base, "rank": a.config.get("rank"),
                                                     "lora_hash": adapter_sha256(a.folder)}}
        return out.save(path)

    def with_lora(self, adapter, scale: float | None = None, name: str | None = None) -> "Pipeline":
        """This pipeline (sharing its networks and caches) with a LoRA adapter as the default
        setting, named `name` (default "<model>+<adapter>"). Refuses an adapter of another base."""
        if "lora" not in self.supports:
            raise UserInputError(f"the {self.family} family does not support the 'lora' setting yet")
        s = self._check_lora(replace(self.defaults, lora=str(adapter), lora_scale=scale))
        if getattr(self, "_adapters", None) is None:
            from .train.lora import AdapterCache

            self._adapters = AdapterCache()
        out = copy.copy(self)
        out.defaults = s
        from .train.lora import read_adapter

        out.name = name or f"{self.name}+{read_adapter(s.lora).name}"
        return out
