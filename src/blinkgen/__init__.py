"""blinkgen: train text-to-image generators on captioned images, then generate fast."""
__version__ = "0.1.0"


def load(name_or_path: str = "default", device: str = "cpu", dtype: str = "fp32"):
    """Load a generator: "default" (the embedded model), another embedded name, or a model folder."""
    from .api import load as _load

    return _load(name_or_path, device=device, dtype=dtype)


__all__ = ["load", "__version__"]
