"""blinkgen: train text-to-image generators on captioned images, then generate fast."""
__version__ = "0.1.0"


def load(name_or_path: str = "default", device: str = "cpu", dtype: str = "fp32"):
    """Load a generator: "default" (the embedded model), another embedded name, or a model folder.
    Returns a `blinkgen.pipeline.Pipeline` (`generate(prompt, n, seed)` -> PIL images, or
    `sample([Request(prompt, seed), ...], settings)` -> SampleResult)."""
    from .api import load as _load

    return _load(name_or_path, device=device, dtype=dtype)


def __getattr__(name: str):
    """`blinkgen.Request`, `blinkgen.Pipeline`, ... without importing torch on `import blinkgen`."""
    if name in ("Pipeline", "Request", "Settings", "SampleResult"):
        from . import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["load", "Pipeline", "Request", "Settings", "SampleResult", "__version__"]
