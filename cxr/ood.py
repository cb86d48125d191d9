"""Does an upload look like the training X-rays? Mahalanobis distance in the model's feature space.

Fits a mean and a shrunk covariance (Ledoit-Wolf) on the pooled features of the training split.
The threshold is set by a stated false-alarm rate on children: the lowest distance that flags at
most ``FALSE_ALARM`` (2 %) of the clean validation X-rays, so that a film from another population
(an adult's, a photo, a document) is flagged as often as possible without flagging the children the
model was made for. How many of their copies changed by the stress bank it flags is measured and
recorded per shift: holding the bank pooled to 2 % as well was tried and rejected, since detector
noise alone (noise_8) then raised the threshold fifteen-fold (179 → 2,680 on the default), blinding
the check to other populations to spare noisy films that are themselves off the training data.
Writes ``ood.safetensors`` and records it (with its sha256 and the false alarms measured) in
``config.json``. ``python -m cxr.cli.ood`` fits it for saved weights.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from cxr.forward import FeatureCapture, batched_logits
from cxr.model import CONFIG_NAME, ModelConfig, ModelLoadError, sha256_file
from cxr.stress import BANK, apply_shift

OOD_NAME = "ood.safetensors"
FALSE_ALARM = 0.02  # the share of pediatric validation X-rays (clean, and the bank pooled) it may flag
REASON = "outside the pediatric chest X-ray population the model was trained on"


class OodScorer:
    """Squared Mahalanobis distance of features from the training distribution."""

    def __init__(self, mean: torch.Tensor, precision: torch.Tensor, threshold: float, layer: str | None = None):
        self.mean, self.precision, self.threshold, self.layer = mean, precision, threshold, layer

    @classmethod
    def from_folder(cls, folder: Path, config: ModelConfig) -> OodScorer | None:
        if not config.ood:
            return None
        path = folder / OOD_NAME
        if not path.is_file() or sha256_file(path) != config.ood["sha256"]:
            raise ModelLoadError(f"{path}: missing or its sha256 does not match {folder / CONFIG_NAME}")
        tensors = load_file(path)
        return cls(tensors["mean"], tensors["precision"], float(config.ood["threshold"]), config.ood.get("layer"))

    def distance(self, features: torch.Tensor) -> np.ndarray:
        centered = features.double() - self.mean.double()
        return ((centered @ self.precision.double()) * centered).sum(1).numpy()


def pooled_features(model: torch.nn.Module, images_u8: torch.Tensor, layer: str | None = None) -> torch.Tensor:
    """The features the check scores, for uint8 images at input size, from the one batched loop."""
    with FeatureCapture(model, layer) as capture:
        batched_logits(model, images_u8, batch_size=128)
    return capture.all()


def fit(
    train_features: torch.Tensor, val_features: torch.Tensor, shifted: dict[str, torch.Tensor] | None = None
) -> tuple[OodScorer, dict]:
    """Mean and shrunk covariance of the training features; the threshold flags at most ``FALSE_ALARM``
    of the validation features; the share of the ``shifted`` validation features it flags is recorded."""
    from sklearn.covariance import LedoitWolf

    estimate = LedoitWolf().fit(train_features.double().numpy())
    scorer = OodScorer(torch.from_numpy(estimate.location_).float(), torch.from_numpy(estimate.precision_).float(), 0.0)
    val_distances = scorer.distance(val_features)
    by_shift = {name: scorer.distance(features) for name, features in (shifted or {}).items()}
    pooled = np.concatenate(list(by_shift.values())) if by_shift else val_distances
    scorer.threshold = float(np.quantile(val_distances, 1 - FALSE_ALARM, method="higher"))
    stats = {
        "threshold": scorer.threshold,
        "rule": f"flags <= {FALSE_ALARM:.0%} of the clean validation X-rays",
        "val_pass_rate": float(np.mean(val_distances <= scorer.threshold)),
        "false_alarm": {
            "clean": float(np.mean(val_distances > scorer.threshold)),
            "bank_pooled": float(np.mean(pooled > scorer.threshold)),
            "by_shift": {name: float(np.mean(d > scorer.threshold)) for name, d in by_shift.items()},
        },
    }
    return scorer, stats


def fit_and_save(
    folder: Path,
    model: torch.nn.Module,
    config: ModelConfig,
    train_images: torch.Tensor,
    val_images: torch.Tensor,
    layer: str | None = None,
) -> dict:
    """Fit the check on cached uint8 training/validation images (the validation ones also changed by the
    stress bank, to measure its false alarms there); write ood.safetensors, record it in config.

    ``layer``: a module whose output is pooled instead of the classifier's input, e.g. a stage that
    fine-tuning left frozen (ImageNet features, which keep non-X-rays far from X-rays).
    """
    train_features, val_features = (pooled_features(model, images, layer) for images in (train_images, val_images))
    shifted = {s.name: pooled_features(model, apply_shift(s, val_images), layer) for s in BANK}
    scorer, stats = fit(train_features, val_features, shifted)
    save_file({"mean": scorer.mean.contiguous(), "precision": scorer.precision.contiguous()}, folder / OOD_NAME)
    config.ood = {
        "file": OOD_NAME,
        "sha256": sha256_file(folder / OOD_NAME),
        "distance": "mahalanobis^2",
        "fit_on": f"{len(train_images)} training images",
        "layer": layer,
        **stats,
    }
    return stats
