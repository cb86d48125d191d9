"""Acquisition-shift augmentation for training: framing, exposure, texture and compression drawn per image.

The models first shipped read framing and detector texture as signs of health (a normal child framed
tighter, or with a little more noise, was called pneumonia). This augmentation takes those cues away
by varying them at random in training. Its ranges are continuous and chosen on their own; the stress
bank (:mod:`cxr.stress`) measures fixed levels, and some of its kinds (sharpening, another resize
path, added marker letters) are never seen in training, so the bank also measures unseen shifts.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF


class RandomGamma(v2.Transform):
    """Exposure: gamma drawn log-uniformly in ``[low, high]`` (torchvision has the op but no random form).

    A v2 transform, so a lung mask passed beside the image goes through unchanged.
    """

    def __init__(self, low: float = 0.6, high: float = 1.6):
        super().__init__()
        self.log_low, self.log_high = torch.log(torch.tensor(low)), torch.log(torch.tensor(high))

    def make_params(self, flat_inputs: list) -> dict:
        return {"gamma": float(torch.exp(self.log_low + torch.rand(()) * (self.log_high - self.log_low)))}

    def transform(self, inpt: torch.Tensor, params: dict) -> torch.Tensor:
        return inpt if isinstance(inpt, tv_tensors.Mask) else TF.adjust_gamma(inpt, params["gamma"])


@dataclass(frozen=True)
class Framing:
    """How far training zooms in (smallest kept share of the area) and out (padded side), and how often."""

    min_area: float
    max_zoom_out: float
    p_in: float
    p_out: float


# "shift": to a third of the area (a tightly collimated film), out by 35 %.
# "zoom": the whole range real films show, past the bank's tightest crop (crop_22 keeps 31 % of the
# area) to a fifth, and out to 1.6x the side (a wide view with the abdomen and arms in it).
FRAMINGS = {
    "shift": Framing(min_area=0.35, max_zoom_out=1.35, p_in=0.6, p_out=0.2),
    "zoom": Framing(min_area=0.2, max_zoom_out=1.6, p_in=0.6, p_out=0.3),
}


def shift_transform(size: int, hflip: bool = False, framing: Framing = FRAMINGS["shift"]) -> v2.Compose:
    """One image uint8 (1, S, S) → float (1, S, S) in [0, 1], with every acquisition cue redrawn."""
    return v2.Compose(
        [
            # Framing: zoom in as far as a tightly collimated film, or out (padding).
            v2.RandomApply([v2.RandomZoomOut(fill=0, side_range=(1.0, framing.max_zoom_out))], p=framing.p_out),
            v2.RandomApply(
                [v2.RandomResizedCrop(size, scale=(framing.min_area, 1.0), ratio=(0.75, 1.33))], p=framing.p_in
            ),
            v2.Resize((size, size)),  # after a zoom-out
            v2.RandomAffine(degrees=10, translate=(0.05, 0.05)),
            v2.RandomHorizontalFlip(p=0.5 if hflip else 0.0),
            # Exposure and windowing.
            v2.RandomApply([v2.ColorJitter(brightness=0.3, contrast=0.4)], p=0.8),
            v2.RandomApply([RandomGamma(0.6, 1.6)], p=0.5),
            # Detector and pipeline texture: blur, compression, burned-in or erased corner marks.
            v2.RandomApply([v2.GaussianBlur(kernel_size=9, sigma=(0.3, 2.5))], p=0.25),
            v2.RandomApply([v2.JPEG(quality=(10, 90))], p=0.3),
            v2.ToDtype(torch.float32, scale=True),
            v2.RandomApply([v2.RandomChoice([v2.GaussianNoise(sigma=s) for s in (0.01, 0.02, 0.04, 0.06)])], p=0.4),
            v2.RandomErasing(p=0.25, scale=(0.005, 0.03), value=0.0),
        ]
    )


class ShiftAugment:
    """Batch form of :func:`shift_transform` with the same contract as ``cxr.data.Augment``.

    Draws come from torch's global generator (seeded by the training script); the ``generator``
    argument is accepted for the shared call signature.
    """

    def __init__(self, size: int, hflip: bool = False, framing: str = "shift"):
        self.transform = shift_transform(size, hflip, FRAMINGS[framing])

    def __call__(self, batch_u8: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """uint8 (N, 1, S, S) → augmented float in [0, 1], each image its own draw."""
        return torch.stack([self.transform(image).clamp(0, 1) for image in batch_u8])

    def with_masks(
        self, batch_u8: torch.Tensor, masks: torch.Tensor, has_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Like ``__call__``, with each image's lung mask (uint8 (N, 1, S, S)) moved by the same framing
        and geometry (exposure and texture leave masks alone); images without one (``has_mask`` False)
        draw as in ``__call__`` and keep a zero mask."""
        images, moved = [], torch.zeros_like(masks)
        for i, image in enumerate(batch_u8):
            if has_mask[i]:
                with warnings.catch_warnings():  # erased marks leave the lungs as drawn: that pass-through is wanted
                    warnings.filterwarnings("ignore", "RandomErasing", UserWarning)
                    image, mask = self.transform(image, tv_tensors.Mask(masks[i]))
                moved[i] = mask
            else:
                image = self.transform(image)
            images.append(image.clamp(0, 1))
        return torch.stack(images), moved
