"""Does an upload look like the training X-rays? Mahalanobis distance in the model's feature space.

The check asks about the population (is this a young child's chest X-ray?), not the acquisition
(which scanner, framing, exposure or compression). So it fits a mean and a shrunk covariance
(Ledoit-Wolf) on the pooled features of the training X-rays *as training drew them*: each one
redrawn ``AUGMENTED_DRAWS`` times by the shift augmentation (:mod:`cxr.augment`: framing, exposure,
blur, JPEG, noise, marks), so that acquisition variation lies inside the fitted distribution.
Fitted on the clean training X-rays alone, blur, JPEG, noise and reframing each flagged every
shifted validation child of the bank (58.8 % pooled on the default), and the threshold could not
spare them without going blind to photos.

The threshold is set by a stated false-alarm rate on children: the lowest distance that flags at
most ``FALSE_ALARM`` (2 %) of the clean validation X-rays and at most 2 % of their copies changed by
the stress bank (pooled), so that a film from another population (an adult's, a photo, a document)
is flagged as often as possible without flagging the children the model was made for. Each
shift's false alarms are recorded.

The clean fit is kept too (``acquisition``): it is the one that does see acquisition changes, which
is what site adaptation's two-source test (:func:`cxr.adapt.mixture`) needs. Writes
``ood.safetensors`` and records it (with its sha256 and the false alarms measured) in
``config.json``. ``python -m cxr.cli.ood`` fits it for saved weights.
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from cxr.augment import FRAMINGS, ShiftAugment
from cxr.forward import FeatureCapture, LayerReachedError, batched_logits
from cxr.model import CONFIG_NAME, ModelConfig, ModelLoadError, sha256_file
from cxr.stress import BANK, apply_shift

OOD_NAME = "ood.safetensors"
FALSE_ALARM = 0.02  # the share of pediatric validation X-rays (clean, and the bank pooled) it may flag
AUGMENTED_DRAWS = 3  # draws of the training augmentation per training X-ray in the fit
AUGMENT_SEED = 0
REASON = "outside the pediatric chest X-ray population the model was trained on"


class OodScorer:
    """Squared Mahalanobis distance of features from the training distribution."""

    def __init__(
        self,
        mean: torch.Tensor,
        precision: torch.Tensor,
        threshold: float,
        layer: str | None = None,
        acquisition: OodScorer | None = None,
    ):
        self.mean, self.precision, self.threshold, self.layer = mean, precision, threshold, layer
        # The clean training fit, which sees acquisition changes (site adaptation's two-source test);
        # a folder fitted before the two were told apart has only one, and it is that one.
        self.acquisition = acquisition or self

    @classmethod
    def from_folder(cls, folder: Path, config: ModelConfig) -> OodScorer | None:
        if not config.ood:
            return None
        path = folder / OOD_NAME
        if not path.is_file() or sha256_file(path) != config.ood["sha256"]:
            raise ModelLoadError(f"{path}: missing or its sha256 does not match {folder / CONFIG_NAME}")
        tensors = load_file(path)
        layer = config.ood.get("layer")
        acquisition = None
        if "acquisition_mean" in tensors:
            acquisition = cls(tensors["acquisition_mean"], tensors["acquisition_precision"], math.inf, layer)
        return cls(tensors["mean"], tensors["precision"], float(config.ood["threshold"]), layer, acquisition)

    def distance(self, features: torch.Tensor) -> np.ndarray:
        centered = features.double() - self.mean.double()
        return ((centered @ self.precision.double()) * centered).sum(1).numpy()


def pooled_features(model: torch.nn.Module, images_u8: torch.Tensor, layer: str | None = None) -> torch.Tensor:
    """The features the check scores, for uint8 images at input size, from the one batched loop; with
    ``layer``, each pass stops there (the stages after it do not change its output)."""
    batch = 128
    with FeatureCapture(model, layer, stop=layer is not None) as capture:
        for start in range(0, len(images_u8), batch):
            with contextlib.suppress(LayerReachedError):
                batched_logits(model, images_u8[start : start + batch], batch_size=batch)
    return capture.all()


def augmented_draws(images_u8: torch.Tensor, config: ModelConfig, draws: int = AUGMENTED_DRAWS) -> torch.Tensor:
    """``draws`` seeded draws of the shift augmentation (the model's own framing range) of every image,
    back in uint8: the training X-rays as training drew them. The global RNG is left as it was."""
    framing = config.train.get("augment") if config.train.get("augment") in FRAMINGS else "shift"
    augment = ShiftAugment(images_u8.shape[-1], framing=framing)
    copies = []
    with torch.random.fork_rng():
        torch.manual_seed(AUGMENT_SEED)
        for _ in range(draws):
            for start in range(0, len(images_u8), 256):
                copies.append((augment(images_u8[start : start + 256]) * 255).round().to(torch.uint8))
    return torch.cat(copies)


def ledoit_wolf(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and shrunk precision (Ledoit-Wolf) of ``features`` (N, C)."""
    from sklearn.covariance import LedoitWolf

    estimate = LedoitWolf().fit(features.double().numpy())
    return torch.from_numpy(estimate.location_).float(), torch.from_numpy(estimate.precision_).float()


def fit(
    train_features: torch.Tensor,
    val_features: torch.Tensor,
    shifted: dict[str, torch.Tensor] | None = None,
    clean_train_features: torch.Tensor | None = None,
) -> tuple[OodScorer, dict]:
    """Mean and shrunk covariance of the training features; the threshold flags at most ``FALSE_ALARM``
    of the validation features and at most that of the ``shifted`` validation features pooled; the
    share of each shift it flags is recorded. ``clean_train_features``: the acquisition fit's."""
    scorer = OodScorer(*ledoit_wolf(train_features), 0.0)
    if clean_train_features is not None:
        scorer.acquisition = OodScorer(*ledoit_wolf(clean_train_features), math.inf)
    val_distances = scorer.distance(val_features)
    by_shift = {name: scorer.distance(features) for name, features in (shifted or {}).items()}
    pooled = np.concatenate(list(by_shift.values())) if by_shift else val_distances
    scorer.threshold = max(float(np.quantile(d, 1 - FALSE_ALARM, method="higher")) for d in (val_distances, pooled))
    stats = {
        "threshold": scorer.threshold,
        "rule": f"flags <= {FALSE_ALARM:.0%} of the clean validation X-rays and of the bank pooled",
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
    draws: int = AUGMENTED_DRAWS,
) -> dict:
    """Fit the check on cached uint8 training/validation images: the population fit on ``draws`` draws of
    the training augmentation of each training image, the acquisition fit on them as they are; the
    threshold on the validation images, clean and changed by the stress bank. Writes ood.safetensors
    and records it in config.

    ``layer``: a module whose output is pooled instead of the classifier's input, e.g. a stage that
    fine-tuning left frozen (ImageNet features, which keep non-X-rays far from X-rays).
    """
    clean_features = pooled_features(model, train_images, layer)
    train_features = clean_features
    if draws:
        train_features = pooled_features(model, augmented_draws(train_images, config, draws), layer)
    val_features = pooled_features(model, val_images, layer)
    shifted = {s.name: pooled_features(model, apply_shift(s, val_images), layer) for s in BANK}
    # Without draws the two fits are one: fitted once, it serves as its own acquisition fit.
    scorer, stats = fit(train_features, val_features, shifted, clean_features if draws else None)
    tensors = {"mean": scorer.mean, "precision": scorer.precision}
    tensors |= {"acquisition_mean": scorer.acquisition.mean, "acquisition_precision": scorer.acquisition.precision}
    # Cloned: without draws the acquisition fit is the population fit, and safetensors refuses shared memory.
    save_file({name: tensor.contiguous().clone() for name, tensor in tensors.items()}, folder / OOD_NAME)
    fit_on = f"{draws} draws of the training augmentation of each of " if draws else ""
    config.ood = {
        "file": OOD_NAME,
        "sha256": sha256_file(folder / OOD_NAME),
        "distance": "mahalanobis^2",
        "fit_on": f"{fit_on}{len(train_images)} training images",
        "acquisition_fit_on": f"{len(train_images)} training images as they are (site adaptation's two-source test)",
        "layer": layer,
        **stats,
    }
    return stats
