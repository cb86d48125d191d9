"""Measure site adaptation (:mod:`cxr.adapt`) on the stress bank, where its assumption holds and where it fails.

Each shift of the bank changes the whole validation split the same way: one new "site". Its
images are adapted on without labels and scored at the model's own calibration and threshold,
as one batch and in random batches of 32, 64 and 128. Then batches that break the assumption:
half clean and half cropped (two sources), and confounded ones whose NORMAL images come from one
source and PNEUMONIA from the other. Each is scored without adaptation, with it forced, and as the
system runs it (the two-source test first).
"""

from __future__ import annotations

import numpy as np
import torch

from cxr.adapt import adapted_logits
from cxr.evaluation import CLEAN, ShiftedImages, shifted_logits
from cxr.forward import batched_logits
from cxr.metrics import binary_metrics, probabilities
from cxr.model import ModelConfig
from cxr.ood import OodScorer
from cxr.stress import family_of, shift_by_name

# The sites studied: the clean split and the worst shift of each family of the default (plus pad_15,
# the other direction of framing); batch sizes are swept on the clean split and the worst shift.
SITES = ("crop_22", "pad_15", "gamma_1.4", "jpeg_20", "blur_1.5", "rotate_10", "marker_added")
SWEPT = ("crop_22",)
BATCH_SIZES = (32, 64, 128)
MIXED_WITH = "crop_22"  # the bank's worst shift: the second source of the mixed batches
FIELDS = ("auc", "sensitivity", "specificity", "ece")


def _score(config: ModelConfig, logits: np.ndarray, labels: np.ndarray) -> dict:
    metrics = binary_metrics(probabilities(logits, config.temperature, config.logit_bias), labels, config.threshold)
    return {key: metrics[key] for key in FIELDS}


def _adapted(model, config, ood, images, labels, batch_size: int, check: bool = True) -> dict:
    logits, reports = adapted_logits(model, config, images, batch_size, ood, check)
    refused = sum(not r.adapted for r in reports)
    separations = [r.separation for r in reports if r.separation is not None]
    extra = {"batches": len(reports), "not_adapted": refused}
    if separations:
        extra["separation_median"] = float(np.median(separations))
    return {**_score(config, logits, labels), **extra}


def mixed_batches(images: ShiftedImages, labels: np.ndarray, seed: int = 0) -> dict[str, torch.Tensor]:
    """Batches thrown together from two sources: clean and ``MIXED_WITH``, halves or split by label."""
    clean, other = images[CLEAN], images[MIXED_WITH]
    half = torch.from_numpy(np.random.default_rng(seed).permutation(len(labels)) < len(labels) // 2)
    pneumonia = torch.from_numpy(labels == 1)

    def pick(from_other: torch.Tensor) -> torch.Tensor:
        return torch.where(from_other[:, None, None, None], other, clean)

    return {
        f"half clean, half {MIXED_WITH}": pick(half),
        f"clean NORMAL, {MIXED_WITH} PNEUMONIA": pick(pneumonia),
        f"{MIXED_WITH} NORMAL, clean PNEUMONIA": pick(~pneumonia),
    }


def study(
    model: torch.nn.Module,
    config: ModelConfig,
    ood: OodScorer,
    images: ShiftedImages,
    labels: np.ndarray,
    cache_dir: str | None = ".cache",
) -> dict:
    """``{"sites": {shift: {"none", "all", "32", ...}}, "families": ..., "mixed": ...}``."""
    plain = shifted_logits(model, config, images, [shift_by_name(name) for name in SITES], cache_dir=cache_dir)
    sites = {}
    for name in [CLEAN, *SITES]:
        row = {
            "none": _score(config, plain[name], labels),
            "all": _adapted(model, config, ood, images[name], labels, 0),
        }
        if name in (CLEAN, *SWEPT):
            row |= {str(b): _adapted(model, config, ood, images[name], labels, b) for b in BATCH_SIZES}
        sites[name] = row
    mixed = {}
    for name, batch in mixed_batches(images, labels).items():
        checked = _adapted(model, config, ood, batch, labels, 0)  # one batch: its test's separation is the batch's
        mixed[name] = {
            "none": _score(config, batched_logits(model, batch), labels),
            "forced": _adapted(model, config, ood, batch, labels, 0, check=False),
            "checked": checked,
            "separation": checked["separation_median"],
        }
    return {"sites": sites, "families": _family_worst(sites), "mixed": mixed}


def _family_worst(sites: dict) -> dict:
    """Per family of shifts: the worst sensitivity, specificity and ECE, without and with adaptation."""
    families: dict[str, dict] = {}
    for shift in map(shift_by_name, SITES):
        for mode in ("none", "all"):
            entry = families.setdefault(family_of(shift), {}).setdefault(mode, {})
            m = sites[shift.name][mode]
            entry["sensitivity"] = min(entry.get("sensitivity", 1.0), m["sensitivity"])
            entry["specificity"] = min(entry.get("specificity", 1.0), m["specificity"])
            entry["ece"] = max(entry.get("ece", 0.0), m["ece"])
    return families
