"""Editing as pure functions around the flow samplers (sampling/flow.py), which stay untouched:
img2img (SDEdit) cuts the schedule and starts part-way along the path; inpainting wraps the model
function so the known region follows the input's own path at every step; masks move between the
pixel grid and the latent / token grid; the final composite is made in pixel space.

SDEdit (Meng et al. 2022): for strength s in (0, 1], the init image's latents z are noised to
x_s = (1 - s) z + s noise (`flow.interpolate`) and the ODE is solved from t = s to 0 over
`cut_schedule(ts, s)`. s = 1 starts from pure noise, so it is exactly text-to-image.

Inpainting, training-free (after RePaint, Lugmayr et al. 2022, and Blended Latent Diffusion,
Avrahami et al. 2023: put the known region back at every step, in latent space). With the straight
flow path and ONE noise draw, the known region's path is x_t = (1 - t) z + t noise, and its
velocity at a point x is (x - z) / t: the velocity whose data prediction x - t v is exactly z.
`inpaint_wrap` blends that velocity with the network's, v' = m v + (1 - m) (x - z) / t, with m the
latent repaint mask. For Euler this IS blending the state after every step,
x_next = m x_next(model) + (1 - m) x_next(known); for Heun and DPM-Solver++(2M) the known region's
data prediction is exactly z at every evaluation, so outside the mask all three solvers stay on
the input's path (checked in tests/unit/test_edit.py). Unlike RePaint we do not draw fresh noise
for the known region at each step (the samplers are deterministic ODE solvers) nor resample
("jump back"); the feathered latent mask and the pixel composite do the harmonising.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

# A latent cell a quarter covered by the pixel mask (4 of 16 pixels at downsample 4) or more is
# repainted fully; less, in proportion. Cells are then feathered one cell outward (see latent_mask).
FULL_COVER = 0.25
# The schedule's first kept grid point is merged into the cut when it lies closer to the cut than
# this fraction of the next grid step: a tiny first step would make DPM-Solver++(2M)'s second-order
# correction (ratio of successive step sizes) blow up.
MERGE_FRACTION = 0.5


def cut_schedule(ts: torch.Tensor, t_start: float) -> torch.Tensor:
    """The part of a decreasing schedule `ts` (1 -> 0, from `flow.flow_schedule`) below t_start,
    starting exactly at t_start: [t_start, ts[i], ..., 0] for every ts[i] < t_start. A first kept
    point closer to t_start than MERGE_FRACTION of the following step is dropped. t_start in
    (0, 1]; t_start >= ts[0] returns ts unchanged. -> 1-D float tensor, at least 2 points."""
    t_start = float(t_start)
    if not 0.0 < t_start <= 1.0:
        raise ValueError(f"t_start must be in (0, 1], got {t_start}")
    if t_start >= float(ts[0]):
        return ts
    first = torch.tensor([t_start], dtype=ts.dtype)  # decide in the schedule's own precision
    below = ts[ts < first]  # ends with 0
    # repeat: on a shifted schedule, dropping one point can leave the next one still too close
    while len(below) >= 2 and float(first - below[0]) < MERGE_FRACTION * float(below[0] - below[1]):
        below = below[1:]
    return torch.cat([first, below])


def start_point(z: torch.Tensor, noise: torch.Tensor, t_start: float) -> torch.Tensor:
    """x at t_start on the straight path from the init latents z (B, C, S, S) to noise: SDEdit's
    starting point. t_start = 1 returns the noise itself (bit-exact text-to-image)."""
    if t_start >= 1.0:
        return noise
    return (1.0 - t_start) * z + t_start * noise


def inpaint_wrap(model_fn: ModelFn, known: torch.Tensor, repaint: torch.Tensor) -> ModelFn:
    """model_fn(x, t) -> v, with the known region held on the input's path (module doc).
    known: (B, C, S, S) init latents z; repaint: (B, 1, S, S) in [0, 1], 1 = the network paints,
    0 = keep the input. The samplers never evaluate at t = 0, so the division is safe."""
    m = repaint.to(known.dtype)

    def fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        v = model_fn(x, t).float()
        tt = t.float().view(-1, *([1] * (x.dim() - 1)))  # (B, 1, 1, 1)
        v_known = (x - known) / tt  # the velocity whose data prediction is exactly z
        return m * v + (1.0 - m) * v_known

    return fn


# --- masks ---------------------------------------------------------------------------------------
def latent_mask(repaint_px: torch.Tensor, factor: int) -> torch.Tensor:
    """Pixel repaint mask (B, 1, H, W) in [0, 1] -> latent repaint mask (B, 1, H/f, W/f) in [0, 1]:
    the area average of each f x f cell divided by FULL_COVER (clamped), then feathered one cell
    outward (each cell at least the 3x3 mean of its neighbours), so the network may adjust the
    known latents next to the hole. Outward feathering costs nothing outside the mask: the pixel
    composite (`composite`) restores every pixel the user kept."""
    cover = F.avg_pool2d(repaint_px.float(), factor)  # (B, 1, h, w): fraction of each cell to repaint
    m = (cover / FULL_COVER).clamp(0.0, 1.0)
    ring = F.avg_pool2d(F.pad(m, (1, 1, 1, 1), mode="replicate"), 3, stride=1)  # (B, 1, h, w)
    return torch.maximum(m, ring)


def token_mask(repaint_px: torch.Tensor, factor: int) -> torch.Tensor:
    """Pixel repaint mask (B, 1, H, W) -> (B, N) bool over the token grid (row-major, N =
    (H/f) * (W/f)): a token is redrawn when any pixel of its cell is to be repainted."""
    cover = F.avg_pool2d(repaint_px.float(), factor)  # (B, 1, h, w)
    return (cover > 0).flatten(1)


def composite_alpha(repaint_px: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) repaint mask in [0, 1] -> the composite's alpha: m * box3(m), a one-pixel
    feather INSIDE the mask (the generated image fades into the input over the mask's border
    pixels). Exactly 0 wherever m is 0, so those pixels stay the input's."""
    m = repaint_px.float()
    blur = F.avg_pool2d(F.pad(m, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    return m * blur


def composite(generated: torch.Tensor, init: torch.Tensor, repaint_px: torch.Tensor) -> torch.Tensor:
    """Pixel-space composite of generated (B, 3, H, W) uint8 over init (B, 3, H, W) uint8 with the
    repaint mask (B, 1, H, W) in [0, 1] -> (B, 3, H, W) uint8. Where the mask is 0 the result is
    the init pixel exactly (not its autoencoder round trip)."""
    a = composite_alpha(repaint_px)
    out = a * generated.float() + (1.0 - a) * init.float()
    return torch.where(a > 0, out.round().clamp(0, 255).to(torch.uint8), init)


# --- request images -> tensors -----------------------------------------------------------------
IMG2IMG_STRENGTH = 0.6  # a request with an init_image and no strength: keeps the layout, redraws detail
INPAINT_STRENGTH = 1.0  # with a mask: repaint the hole from pure noise (the known region still guides it)


def default_strength(strength: float | None, has_mask: bool) -> float:
    """The strength a request runs at: its own, else INPAINT_STRENGTH with a mask and
    IMG2IMG_STRENGTH without."""
    if strength is not None:
        return float(strength)
    return INPAINT_STRENGTH if has_mask else IMG2IMG_STRENGTH


def init_pixels(image, size: int) -> torch.Tensor:
    """A request's init image (a PIL image, array, path or bytes: read by the one image reader,
    data/image_io.read_image) -> (3, size, size) uint8, resized with LANCZOS when its side is not
    `size`. UserInputError (naming init_image) if it is not square: an edit keeps the picture's
    geometry, so it is neither padded nor cropped here."""
    from ..data.image_io import read_image

    return _square_pixels(read_image(image, name="init_image"), size)


def edit_pixels(image, mask, size: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A request's init image and optional mask -> ((3, size, size) uint8, (1, size, size) float32
    repaint mask in [0, 1] or None). The mask is read by data/image_io.read_mask (transparent =
    repaint; without transparency white = repaint) and area-resampled. UserInputError (naming
    the field) for a non-square image or a mask of another size than the image."""
    from ..data.image_io import read_image, read_mask
    from ..errors import UserInputError

    im = read_image(image, name="init_image")
    px = _square_pixels(im, size)
    if mask is None:
        return px, None
    m = read_mask(mask, name="mask")
    if m.size != im.size:
        raise UserInputError(f"mask is {m.size[0]}x{m.size[1]} but init_image is "
                             f"{im.size[0]}x{im.size[1]}; they must be the same size")
    a = Image.fromarray(np.asarray(m, dtype=np.float32) / 255.0, mode="F")
    if a.size != (size, size):
        a = a.resize((size, size), Image.Resampling.BOX)
    return px, torch.from_numpy(np.clip(np.asarray(a, dtype=np.float32), 0.0, 1.0).copy())[None]


def _square_pixels(im: Image.Image, size: int) -> torch.Tensor:
    from ..errors import UserInputError

    w, h = im.size
    if w != h:
        raise UserInputError(f"init_image must be square, got {w}x{h}; crop or pad it first")
    if im.size != (size, size):
        im = im.resize((size, size), Image.Resampling.LANCZOS)
    return torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()).permute(2, 0, 1)
