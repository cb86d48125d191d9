"""A seeded bank of acquisition changes that X-ray sources differ by, for the shift-stress evaluation.

Each change maps one uint8 grayscale image (1, S, S) to another of the same size, through
torchvision's maintained ops (``torchvision.transforms.v2.functional``) and Pillow's text drawing
for burned-in marker letters. Every image of the validation split is changed the same way; the
random ones (noise, letter placement) are seeded, so the bank gives the same images on every run.

The levels include those measured when the first models were found to read framing and detector
texture as signs of health: gamma 0.7/1.4, contrast x0.7/x1.3, padding 8-15 %, borders cropped
8/15/22 % per side, Gaussian noise sigma 8 (of 255), JPEG quality 20, Gaussian blur sigma 1.5.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF

STRESS_SEED = 0


@dataclass(frozen=True)
class Shift:
    """One named acquisition change: ``apply(image_u8, rng)`` → changed uint8 image of the same size."""

    name: str
    kind: str
    apply: Callable[[torch.Tensor, np.random.Generator], torch.Tensor]


def _crop(fraction: float) -> Callable:
    def apply(image: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        size = image.shape[-1]
        inner = round(size * (1 - 2 * fraction))
        return TF.resize(TF.center_crop(image, [inner, inner]), [size, size], antialias=True)

    return apply


def _pad(fraction: float) -> Callable:
    def apply(image: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        size = image.shape[-1]
        return TF.resize(TF.pad(image, [round(size * fraction)], fill=0), [size, size], antialias=True)

    return apply


def _noise(sigma_of_255: float) -> Callable:
    def apply(image: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        noise = torch.from_numpy(rng.normal(0.0, sigma_of_255, size=tuple(image.shape)).astype(np.float32))
        return (image.float() + noise).round().clamp(0, 255).to(torch.uint8)

    return apply


def _resize_path(low: int, down: InterpolationMode, up: InterpolationMode) -> Callable:
    def apply(image: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        size = image.shape[-1]
        small = TF.resize(image, [low, low], interpolation=down, antialias=down != InterpolationMode.NEAREST)
        return TF.resize(small, [size, size], interpolation=up, antialias=False)

    return apply


def _corners(fraction: float) -> Callable:
    """Burned-in marker letters erased: the four corner boxes, where they sit, set to black."""

    def apply(image: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        size = image.shape[-1]
        box = round(size * fraction)
        for top, left in ((0, 0), (0, size - box), (size - box, 0), (size - box, size - box)):
            image = TF.erase(image, top, left, box, box, torch.tensor(0, dtype=image.dtype))
        return image

    return apply


def _letters(image: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """A burned-in marker letter (L or R, white, about 9 % of the side) added near a random corner."""
    size = image.shape[-1]
    picture = Image.fromarray(image[0].numpy())
    font = ImageFont.load_default(size=max(8, round(size * 0.09)))
    margin = round(size * 0.04)
    x = margin if rng.random() < 0.5 else size - margin - round(size * 0.07)
    y = margin if rng.random() < 0.5 else size - margin - round(size * 0.1)
    ImageDraw.Draw(picture).text((x, y), "LR"[int(rng.integers(2))], fill=255, font=font)
    return torch.from_numpy(np.asarray(picture).copy())[None]


BANK: tuple[Shift, ...] = (
    Shift("gamma_0.7", "exposure", lambda x, rng: TF.adjust_gamma(x, 0.7)),
    Shift("gamma_1.4", "exposure", lambda x, rng: TF.adjust_gamma(x, 1.4)),
    Shift("contrast_0.7", "contrast", lambda x, rng: TF.adjust_contrast(x, 0.7)),
    Shift("contrast_1.3", "contrast", lambda x, rng: TF.adjust_contrast(x, 1.3)),
    Shift("blur_1.5", "blur", lambda x, rng: TF.gaussian_blur(x, kernel_size=9, sigma=1.5)),
    Shift("sharpen_3", "sharpening", lambda x, rng: TF.adjust_sharpness(x, 3.0)),
    Shift("noise_8", "detector noise", _noise(8.0)),
    Shift("jpeg_20", "compression", lambda x, rng: TF.jpeg(x, 20)),
    Shift("resize_112_nearest", "resize path", _resize_path(112, InterpolationMode.NEAREST, InterpolationMode.BICUBIC)),
    Shift("crop_8", "framing", _crop(0.08)),
    Shift("crop_15", "framing", _crop(0.15)),
    Shift("crop_22", "framing", _crop(0.22)),
    Shift("pad_8", "framing", _pad(0.08)),
    Shift("pad_15", "framing", _pad(0.15)),
    Shift("rotate_10", "rotation", lambda x, rng: TF.rotate(x, 10.0, interpolation=InterpolationMode.BILINEAR)),
    Shift("markers_erased", "marker letters", _corners(0.12)),
    Shift("marker_added", "marker letters", _letters),
)


# The bank's kinds of change, grouped into the families a calibration rule is judged by: a rule fitted
# without one family must still hold on it (``cxr.calibrate.transfer``).
FAMILIES = {
    "framing": ("framing",),
    "intensity": ("exposure", "contrast"),
    "texture": ("blur", "sharpening", "detector noise", "compression", "resize path"),
    "geometry": ("rotation",),
    "markers": ("marker letters",),
}


def family_of(shift: Shift) -> str:
    """The family (``FAMILIES``) a shift of the bank belongs to."""
    return next(family for family, kinds in FAMILIES.items() if shift.kind in kinds)


def shift_by_name(name: str) -> Shift:
    for shift in BANK:
        if shift.name == name:
            return shift
    raise KeyError(f"no stress shift named {name!r}; the bank has {', '.join(s.name for s in BANK)}")


def apply_shift(shift: Shift, images_u8: torch.Tensor, seed: int = STRESS_SEED) -> torch.Tensor:
    """Change every image of a uint8 (N, 1, S, S) batch the same way; seeded, so runs repeat exactly."""
    rng = np.random.default_rng([seed, BANK.index(shift)])
    return torch.stack([shift.apply(image, rng) for image in images_u8])
