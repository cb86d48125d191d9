"""Dataset listing, patient-grouped split, tensor cache, preprocessing and batch augmentation.

Training, evaluation and the app all decode with ``cxr.io.read_xray`` and resize and normalize
with :class:`Preprocessing` (derived from the model's data config), so an upload of any size
becomes exactly what the model saw in training.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from cxr.errors import DataError
from cxr.io import IMAGE_SUFFIXES, ImageReadError, read_xray, to_grayscale

log = logging.getLogger(__name__)

LABELS = ("NORMAL", "PNEUMONIA")
# How an image reaches the input size, in timm's data-config terms: squashed (no crop), bilinear.
# The training data was stored squashed, so every caller resizes the same way (``resize_to_input``).
RESIZE = {"interpolation": "bilinear", "crop_pct": 1.0, "crop_mode": "squash"}

# person123_bacteria_4.jpeg | IM-0115-0001.jpeg | NORMAL2-IM-0587-0001-0001.jpeg
_PATIENT_PATTERNS = (
    re.compile(r"^(person\d+)_"),
    re.compile(r"^(NORMAL2-IM-\d+)-"),
    re.compile(r"^(IM-\d+)-"),
)


@dataclass(frozen=True)
class Sample:
    path: Path
    label: int  # 0 = NORMAL, 1 = PNEUMONIA

    @property
    def patient(self) -> str:
        return patient_id(self.path.name)


def patient_id(filename: str) -> str:
    """The patient a Kermany file name belongs to; the file stem when no pattern matches."""
    for pattern in _PATIENT_PATTERNS:
        match = pattern.match(filename)
        if match:
            return match.group(1)
    return Path(filename).stem


def list_samples(folder: str | Path) -> list[Sample]:
    """All images in a Kaggle-layout folder (``NORMAL/`` and ``PNEUMONIA/``), sorted by path."""
    folder = Path(folder)
    samples = []
    for label, name in enumerate(LABELS):
        class_dir = folder / name
        if not class_dir.is_dir():
            raise DataError(f"{class_dir} is missing: expected NORMAL/ and PNEUMONIA/ in {folder}")
        samples += [
            Sample(path, label) for path in sorted(class_dir.iterdir()) if path.suffix.lower() in IMAGE_SUFFIXES
        ]
    return samples


def _duplicate_groups(folder: Path) -> dict[str, str]:
    """Map each file name listed in DUPLICATES.txt to the patient of its group's first file."""
    dup_file = folder.parent / "DUPLICATES.txt"
    if not dup_file.exists():
        return {}
    mapping = {}
    for line in dup_file.read_text().splitlines():
        names = [Path(p).name for p in line.split()]
        for name in names[1:]:
            mapping[name] = patient_id(names[0])
    return mapping


def split_by_patient(
    samples: list[Sample], val_fraction: float = 0.15, seed: int = 0
) -> tuple[list[Sample], list[Sample]]:
    """Carve a patient-grouped, class-stratified validation split from ``samples``.

    Identical images listed in DUPLICATES.txt are kept with their twin, so no image is on both
    sides. Deterministic for a given ``seed``.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    duplicates = _duplicate_groups(samples[0].path.parent.parent) if samples else {}
    groups = [duplicates.get(s.path.name, s.patient) for s in samples]
    labels = [s.label for s in samples]
    n_splits = max(2, round(1 / val_fraction))
    folds = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    train_idx, val_idx = next(folds.split(np.zeros(len(samples)), labels, groups))
    return [samples[i] for i in train_idx], [samples[i] for i in val_idx]


def resize_to_input(image: Image.Image, input_size: int) -> torch.Tensor:
    """Grayscale image → uint8 tensor (1, S, S), squashed to a square as the training data was."""
    square = image.resize((input_size, input_size), Image.Resampling.BILINEAR)
    return torch.from_numpy(np.asarray(square, dtype=np.uint8).copy()).unsqueeze(0)


def normalize(batch_u8: torch.Tensor, mean: float, std: float, in_chans: int) -> torch.Tensor:
    """uint8 (N, 1, S, S) or float in [0, 1] → normalized float, replicated to ``in_chans``."""
    batch = batch_u8.float() / 255.0 if batch_u8.dtype == torch.uint8 else batch_u8
    batch = (batch - mean) / std
    if in_chans != 1:
        batch = batch.expand(-1, in_chans, -1, -1)
    return batch.contiguous(memory_format=torch.channels_last)


@dataclass(frozen=True)
class Preprocessing:
    """What the model saw in training, derived from its data config (see ``cxr.model``)."""

    input_size: int
    mean: float
    std: float
    in_chans: int

    def __call__(self, image: Image.Image) -> torch.Tensor:
        """One image of any size or mode → a (1, C, S, S) float tensor for the model."""
        return self.batch([self.tensor(image)])

    def tensor(self, image: Image.Image) -> torch.Tensor:
        """One image of any size or mode → uint8 (1, S, S) at the model's input size."""
        return resize_to_input(to_grayscale(image), self.input_size)

    def batch(self, tensors_u8: list[torch.Tensor]) -> torch.Tensor:
        return self.normalize(torch.stack(tensors_u8))

    def normalize(self, batch: torch.Tensor) -> torch.Tensor:
        """uint8 (N, 1, S, S), or float in [0, 1] (augmented training images) → the model's input."""
        return normalize(batch, self.mean, self.std, self.in_chans)


def cache_file(cache_dir: str | Path, split: str, split_seed: int, input_size: int, limit: int = 0) -> Path:
    """Where the decoded tensors of one side of one split live (shared by train.py and cxr.ood)."""
    return Path(cache_dir) / f"{split}-{split_seed}-{input_size}-{limit}.safetensors"


def decode_samples(samples: list[Sample], input_size: int, cache_file: Path | None = None) -> torch.Tensor:
    """Every sample decoded as the app decodes an upload (``cxr.io.read_xray``) to uint8 (N, 1, S, S);
    with ``cache_file``, once: a matching safetensors cache is reused."""
    from safetensors.torch import load_file, save_file
    from tqdm import tqdm

    names = "\n".join(str(s.path) for s in samples)
    key = f"{input_size}:{hashlib.sha256(names.encode()).hexdigest()}"
    if cache_file and cache_file.exists():
        cached = load_file(cache_file)
        if cached.get("key") is not None and bytes(cached["key"].tolist()).decode() == key:
            log.info("Loaded %d cached images from %s", len(samples), cache_file)
            return cached["images"]
    progress = tqdm(samples, desc="decode", disable=len(samples) < 100)  # a bar for the splits, not for a few files
    images = torch.stack([resize_to_input(_read(s.path), input_size) for s in progress])
    if cache_file:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        key_tensor = torch.tensor(list(key.encode()), dtype=torch.uint8)
        save_file({"images": images, "key": key_tensor}, cache_file)
    return images


def _read(path: Path) -> Image.Image:
    """``read_xray``, its message prefixed with the file: in a folder of thousands, which one."""
    try:
        return read_xray(path)
    except ImageReadError as error:
        raise ImageReadError(f"{path}: {error}") from None


@dataclass(frozen=True)
class Augment:
    """Anatomy-safe batch augmentation on uint8 grayscale batches, each image its own draw."""

    degrees: float = 10.0
    translate: float = 0.08
    scale: tuple[float, float] = (0.9, 1.1)
    brightness: float = 0.2
    contrast: float = 0.25
    gamma: float = 0.25
    hflip: bool = False

    def __call__(self, batch_u8: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """uint8 (N, 1, S, S) → augmented float in [0, 1]."""
        n = batch_u8.shape[0]

        def uniform(low: float, high: float) -> torch.Tensor:
            return torch.rand(n, generator=generator) * (high - low) + low

        x = batch_u8.float() / 255.0
        angle = uniform(-self.degrees, self.degrees) * math.pi / 180
        zoom = uniform(*self.scale)
        flip = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0) if self.hflip else torch.ones(n)
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
        theta = torch.stack(
            [
                torch.stack([cos * flip, -sin, uniform(-self.translate, self.translate) * 2], 1),
                torch.stack([sin * flip, cos, uniform(-self.translate, self.translate) * 2], 1),
            ],
            1,
        )
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        # Exposure and contrast vary between scanners: the main shift between train and unseen data.
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * uniform(1 - self.contrast, 1 + self.contrast).view(n, 1, 1, 1) + mean
        x = x + uniform(-self.brightness, self.brightness).view(n, 1, 1, 1)
        x = x.clamp(0, 1) ** torch.exp(uniform(-self.gamma, self.gamma)).view(n, 1, 1, 1)
        return x
