"""Field-of-view normalisation: find the lung fields and crop every X-ray to them.

How much of the body a film shows (collimation, patient size, a wide view with the abdomen) says
nothing about pneumonia, yet the first models read it as a sign of health. A small lung segmenter
(a timm encoder with a light top-down decoder, :class:`LungSegmenter`) finds the lungs; the box
around them, widened by a margin, is cut out and resized to the model's input, the same way in
training, evaluation and the app. So every input is framed alike, whatever the film's framing.

A classifier may instead keep the whole frame and dim what lies outside the lungs (``mode="dim"``,
the lung-masked input lever): the lungs keep their detail, the framing around them reads as dark.

Crops are taken from the image at the model's input size (uint8 (N, 1, S, S)), the tensor every
path already has; a Grad-CAM map computed on the crop is pasted back into the whole image's frame
(:func:`paste`), so the overlay still covers the upload as it was.

A weights folder that uses it holds the segmenter in ``fov/`` (``config.json`` + ``model.safetensors``)
and records its sha256 in its own config (``cxr.fov``).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import timm
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torchvision.transforms.v2 import functional as TF

from cxr.errors import ModelLoadError
from cxr.files import CONFIG_NAME, WEIGHTS_NAME, sha256_file
from cxr.lungs import dilate

log = logging.getLogger(__name__)

FOV_DIR = "fov"  # the segmenter's subfolder inside a classifier's weights folder
WHOLE = (0.0, 0.0, 1.0, 1.0)  # the box of an image that is not cut (top, left, height, width)
MODES = ("crop", "dim")  # SegmenterConfig.mode


@dataclass
class SegmenterConfig:
    """What rebuilds a segmenter and turns its mask into a crop."""

    encoder: str = "efficientnet_lite0"
    size: int = 128  # the segmenter's input side: lung boxes need no more
    mean: float = 0.5
    std: float = 0.5
    decoder_channels: int = 32
    margin: float = 0.08  # the box widened by this share of its size on each side
    min_lung_area: float = 0.05  # less lung than this share of the image: no crop (nothing found)
    # A box narrower or shorter than this share of the image is widened around its centre: a lung the
    # segmenter under-reads (a white-out, a dense consolidation) must not be cut out of the crop.
    min_side: float = 0.5
    # How a classifier uses the lungs found: "crop" cuts each film to the lung box; "dim" keeps the whole
    # frame and darkens what lies outside the lungs (dilated by ``dilate``, a share of the side) to
    # ``outside`` of its brightness, so the framing around the lungs carries almost nothing to read.
    mode: str = "crop"
    outside: float = 0.2
    dilate: float = 0.035  # 8 px at 224, as train.py --lung-dilate
    weights_sha256: str = ""
    train: dict | None = None  # how it was trained and its held-out Dice

    def to_json(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def from_json(cls, path: Path) -> SegmenterConfig:
        try:
            config = cls(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError) as error:
            raise ModelLoadError(f"{path}: not a valid segmenter config ({type(error).__name__}: {error})") from error
        if config.mode not in MODES:
            raise ModelLoadError(f"{path}: unknown mode {config.mode!r} (one of {', '.join(MODES)})")
        return config


class LungSegmenter(torch.nn.Module):
    """timm encoder (features_only) + a top-down decoder: one lung logit per pixel at input size."""

    def __init__(self, config: SegmenterConfig):
        super().__init__()
        self.config = config
        self.encoder = timm.create_model(config.encoder, features_only=True, in_chans=1, out_indices=(1, 2, 3, 4))
        width = config.decoder_channels
        self.lateral = torch.nn.ModuleList(torch.nn.Conv2d(c, width, 1) for c in self.encoder.feature_info.channels())
        self.head = torch.nn.Sequential(
            torch.nn.Conv2d(width, width, 3, padding=1),
            torch.nn.BatchNorm2d(width),
            torch.nn.ReLU(inplace=True),
            torch.nn.Conv2d(width, 1, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.encoder(x)
        merged = self.lateral[-1](features[-1])
        for lateral, feature in zip(reversed(self.lateral[:-1]), reversed(features[:-1]), strict=True):
            merged = lateral(feature) + F.interpolate(merged, size=feature.shape[-2:], mode="nearest")
        return F.interpolate(self.head(merged), size=x.shape[-2:], mode="bilinear", align_corners=False)

    def inputs(self, images_u8: torch.Tensor) -> torch.Tensor:
        """uint8 (N, 1, H, W) (or float in [0, 1]) at any size → normalized float at the segmenter's size."""
        x = images_u8.float() / 255.0 if images_u8.dtype == torch.uint8 else images_u8  # or float in [0, 1]
        x = F.interpolate(x, size=(self.config.size,) * 2, mode="bilinear", antialias=True)
        return (x - self.config.mean) / self.config.std

    @torch.no_grad()
    def lung_probability(self, images_u8: torch.Tensor) -> torch.Tensor:
        """P(lung) per pixel, (N, 1, size, size)."""
        self.eval()
        return torch.sigmoid(self(self.inputs(images_u8)))


def lung_box(
    probability: torch.Tensor, margin: float, min_area: float, min_side: float = 0.0
) -> tuple[float, float, float, float]:
    """(top, left, height, width) as shares of the image: the lungs' extent, widened by ``margin``
    and to at least ``min_side`` each way (around its centre, inside the image).

    The extent runs from the 1st to the 99th percentile of the lung pixels' rows and columns, so a
    stray speck does not stretch it. Too little lung: the whole image (nothing to crop to).
    """
    mask = probability[0] > 0.5
    size = mask.shape[-1]
    if mask.float().mean() < min_area:
        return WHOLE
    rows, cols = torch.nonzero(mask, as_tuple=True)
    quantiles = torch.tensor([0.01, 0.99])
    top, bottom = (torch.quantile(rows.float(), quantiles) / size).tolist()
    left, right = (torch.quantile(cols.float(), quantiles) / size).tolist()
    bottom, right = bottom + 1 / size, right + 1 / size  # the last pixel's far edge
    pad_y, pad_x = margin * (bottom - top), margin * (right - left)
    top, bottom = _at_least(top - pad_y, bottom + pad_y, min_side)
    left, right = _at_least(left - pad_x, right + pad_x, min_side)
    return top, left, bottom - top, right - left


def _at_least(low: float, high: float, side: float) -> tuple[float, float]:
    """The span [low, high] widened around its centre to ``side`` if shorter, then kept inside [0, 1]."""
    grow = max(0.0, side - (high - low)) / 2
    low, high = low - grow, high + grow
    shift = max(0.0, -low) - max(0.0, high - 1.0)  # slide back inside before clipping
    return max(0.0, low + shift), min(1.0, high + shift)


def pixel_box(box: tuple[float, float, float, float], side: int) -> tuple[int, int, int, int]:
    """A share box in pixels of a ``side``-wide image, at least one pixel each way."""
    top, left = round(box[0] * side), round(box[1] * side)
    height, width = max(1, round(box[2] * side)), max(1, round(box[3] * side))
    return top, left, min(height, side - top), min(width, side - left)


class FieldOfView:
    """The segmenter and its rule: crop a batch of X-rays to their lungs, or dim what lies outside them."""

    def __init__(self, segmenter: LungSegmenter):
        self.segmenter = segmenter.eval()
        self.config = segmenter.config

    def lung_probabilities(self, images_u8: torch.Tensor, chunk: int = 128) -> Iterator[torch.Tensor]:
        """P(lung) at the segmenter's size, (n, 1, size, size) per chunk of ``chunk`` images: chunks bound
        the memory of a whole training set."""
        for start in range(0, len(images_u8), chunk):
            yield self.segmenter.lung_probability(images_u8[start : start + chunk])

    def boxes(self, images_u8: torch.Tensor) -> list[tuple[float, float, float, float]]:
        """Each image's lung box (top, left, height, width) as shares of its side."""
        config = self.config
        return [
            lung_box(p, config.margin, config.min_lung_area, config.min_side)
            for probability in self.lung_probabilities(images_u8)
            for p in probability
        ]

    def crop(self, images_u8: torch.Tensor) -> tuple[torch.Tensor, list[tuple[float, float, float, float]]]:
        """uint8 (N, 1, S, S) (or float in [0, 1]: augmented training images) → each image cut to its
        lung box and resized back to S x S, with the boxes."""
        side = images_u8.shape[-1]
        boxes = self.boxes(images_u8)
        crops = [
            TF.resized_crop(image, *pixel_box(box, side), [side, side], antialias=True)
            for image, box in zip(images_u8, boxes, strict=True)
        ]
        return torch.stack(crops), boxes

    def lung_weights(self, images_u8: torch.Tensor) -> torch.Tensor:
        """Per pixel, what ``dim`` multiplies by: 1 on the dilated lungs, ``outside`` away from them,
        1 everywhere for an image with too little lung found (nothing to dim around). (N, 1, S, S) float."""
        config, side = self.config, images_u8.shape[-1]
        weights = []
        for probability in self.lung_probabilities(images_u8):
            found = (probability > 0.5).float().mean(dim=(1, 2, 3)) >= config.min_lung_area
            lungs = F.interpolate(probability, size=(side, side), mode="bilinear", align_corners=False)
            lungs = dilate(lungs, round(config.dilate * side))
            lungs[~found] = 1.0
            weights.append(config.outside + (1.0 - config.outside) * lungs)
        return torch.cat(weights)

    def dim(self, images_u8: torch.Tensor) -> torch.Tensor:
        """uint8 (N, 1, S, S) (or float in [0, 1]) → the same frames, darkened outside their lungs."""
        dimmed = images_u8.float() * self.lung_weights(images_u8)
        return dimmed.round().to(torch.uint8) if images_u8.dtype == torch.uint8 else dimmed

    def frame(self, images_u8: torch.Tensor) -> tuple[torch.Tensor, list[tuple[float, float, float, float]]]:
        """The images as a classifier using this field of view sees them (its ``mode``), with the box
        each came from (the whole image when dimmed), to paste a map back into."""
        if self.config.mode == "dim":
            return self.dim(images_u8), [WHOLE] * len(images_u8)
        return self.crop(images_u8)

    @property
    def sha256(self) -> str:
        return self.config.weights_sha256

    def save(self, target: Path) -> dict:
        """Write the segmenter to ``target`` (a classifier's: ``<weights>/fov``); returns what the
        classifier's config records of it."""
        target.mkdir(parents=True, exist_ok=True)
        state = {k: v.contiguous() for k, v in self.segmenter.state_dict().items()}
        save_file(state, target / WEIGHTS_NAME, metadata={"format": "pt", "encoder": self.config.encoder})
        self.config.weights_sha256 = sha256_file(target / WEIGHTS_NAME)
        self.config.to_json(target / CONFIG_NAME)
        # Both files are checked on load: the crop's settings (margin, sizes) change the answers too.
        return {"folder": target.name, "sha256": self.config.weights_sha256, "config_sha256": self.config_sha256}

    @property
    def config_sha256(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self.config), sort_keys=True).encode()).hexdigest()

    @classmethod
    def load(cls, folder: str | Path) -> FieldOfView:
        """A segmenter folder (``config.json`` + ``model.safetensors``), loaded strictly."""
        folder = Path(folder)
        config = SegmenterConfig.from_json(folder / CONFIG_NAME)
        weights = folder / WEIGHTS_NAME
        if not weights.is_file() or (config.weights_sha256 and sha256_file(weights) != config.weights_sha256):
            raise ModelLoadError(f"{weights}: missing or its sha256 does not match {folder / CONFIG_NAME}")
        segmenter = LungSegmenter(config)
        segmenter.load_state_dict(load_file(weights), strict=True)
        log.info("Loaded lung segmenter (%s) from %s", config.encoder, folder)
        return cls(segmenter)

    @classmethod
    def for_weights(cls, folder: str | Path, recorded: dict) -> FieldOfView | None:
        """The field of view a classifier's config records (``cxr.fov``), or None when it uses none."""
        if not recorded:
            return None
        fov = cls.load(Path(folder) / recorded["folder"])
        if fov.sha256 != recorded["sha256"] or fov.config_sha256 != recorded.get("config_sha256"):
            raise ModelLoadError(f"{folder}: the segmenter's sha256 differs from the one its config records")
        return fov


_ATTRIBUTE = "cxr_field_of_view"


def attach(model: torch.nn.Module, fov: FieldOfView | None) -> torch.nn.Module:
    """Let ``fov`` travel with ``model`` (as timm's data config does), so every path that derives its
    preprocessing from the model crops the same way. A plain attribute: not part of the state dict."""
    setattr(model, _ATTRIBUTE, fov)
    return model


def field_of_view(model: torch.nn.Module) -> FieldOfView | None:
    """The field of view attached to ``model``, or None: the model sees whole images."""
    return getattr(model, _ATTRIBUTE, None)


def framed(model: torch.nn.Module, images_u8: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 1, S, S) as ``model`` sees them: cut to (or dimmed around) the lungs if it has a field of view."""
    fov = field_of_view(model)
    return fov.frame(images_u8)[0] if fov is not None else images_u8


def paste(cam_map: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    """A map over the crop → the same map in the whole image's frame (zero outside the box)."""
    side = cam_map.shape[-1]
    top, left, height, width = pixel_box(box, side)
    resized = F.interpolate(torch.from_numpy(cam_map)[None, None].float(), size=(height, width), mode="bilinear")
    whole = np.zeros_like(cam_map, dtype=np.float32)
    whole[top : top + height, left : left + width] = resized[0, 0].numpy()
    return whole
