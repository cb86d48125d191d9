"""Human-drawn lung masks beside the images, and how much of a map's evidence lies off the lungs.

Masks: ``lung_masks/`` (V7 Labs, CC BY 4.0) for 1,083 Kermany images, at the images' 224 x 224
geometry: 255 lung, 127 a device over the lung (counted as lung: it lies in the lung field),
0 background. Training uses them to penalise evidence off the lungs ("right for the right reasons",
``train.py --lung-penalty``); the segmenter and the Grad-CAM lung share read them too.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from cxr.data import Sample
from cxr.errors import DataError

INDEX_NAME = "masks.csv"


def mask_rows(masks_dir: str | Path) -> list[dict[str, str]]:
    """The rows of ``masks.csv``: split, label, image (file in chest_xray/), mask (file in lung_masks/)."""
    index = Path(masks_dir) / INDEX_NAME
    if not index.is_file():
        raise DataError(f"{index} is missing: expected the lung_masks folder")
    with index.open() as handle:
        return list(csv.DictReader(handle))


def read_mask(path: str | Path, size: int) -> np.ndarray:
    """One mask file → bool (size, size), lung (and devices over it) True; resized nearest, as drawn."""
    mask = Image.open(path).convert("L").resize((size, size), Image.Resampling.NEAREST)
    return np.asarray(mask) > 0


def masks_for(samples: list[Sample], masks_dir: str | Path, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The mask of every sample that has one: uint8 (N, 1, S, S) (zeros where none) and bool (N,) has-mask.

    A sample is matched by its place in the Kaggle layout (``split/label/file``), as ``masks.csv`` names it.
    """
    masks_dir = Path(masks_dir)
    rows = mask_rows(masks_dir)
    where = {(r["split"], r["label"], r["image"]): masks_dir / r["split"] / r["label"] / r["mask"] for r in rows}
    masks = torch.zeros(len(samples), 1, size, size, dtype=torch.uint8)
    found = torch.zeros(len(samples), dtype=torch.bool)
    for i, sample in enumerate(samples):
        path = where.get((sample.path.parent.parent.name, sample.path.parent.name, sample.path.name))
        if path is not None:
            masks[i, 0] = torch.from_numpy(read_mask(path, size))
            found[i] = True
    return masks, found


def dilate(masks: torch.Tensor, pixels: int) -> torch.Tensor:
    """Masks (N, 1, S, S), any dtype, grown by ``pixels`` in every direction (a square structuring element)."""
    if pixels <= 0:
        return masks
    grown = F.max_pool2d(masks.float(), kernel_size=2 * pixels + 1, stride=1, padding=pixels)
    return grown.to(masks.dtype)


def off_lung_share(evidence: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Per image, the share of a map's absolute evidence that lies off the lungs, differentiable.

    ``evidence``: (N, h, w) signed per-location contributions (a class activation map); ``masks``:
    (N, 1, S, S) lungs as 0/1. Each map cell counts by the fraction of it that is off the mask, so a
    cell on the lung border is half-penalised. Evidence of either sign counts: off the lungs nothing
    should argue for pneumonia or for health.
    """
    inside = F.adaptive_avg_pool2d(masks.float(), evidence.shape[-2:])[:, 0]
    magnitude = evidence.abs()
    return (magnitude * (1 - inside)).flatten(1).sum(1) / magnitude.flatten(1).sum(1).clamp(min=1e-8)
