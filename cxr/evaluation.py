"""Metrics of weights (one model or an ensemble) on a folder or the recorded split, clean and under shift.

The shift-stress evaluation changes every validation X-ray the same way for each entry of the
bank in :mod:`cxr.stress` and measures the weights at their own calibration and threshold. The
raw logits of each model, shift and TTA setting are cached under ``.cache/logits`` by the weights'
sha256, so ensembles and calibration rules reuse them.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from cxr.adapt import adapted_logits
from cxr.data import Sample, cache_file, decode_samples, list_samples, split_by_patient
from cxr.errors import DataError
from cxr.forward import batched_logits
from cxr.metrics import auc_confidence_interval, binary_metrics, probabilities
from cxr.model import ENSEMBLE_NAME, ModelConfig, is_ensemble, load_model
from cxr.ood import OodScorer
from cxr.stress import BANK, Shift, apply_shift, shift_by_name

log = logging.getLogger(__name__)

CLEAN = "clean"
STRESS_FIELDS = ("auc", "sensitivity", "specificity", "accuracy", "ece")
WORST = {"auc": min, "sensitivity": min, "specificity": min, "accuracy": min, "ece": max}


def recorded_split(data_dir: str | Path, config: ModelConfig) -> tuple[list[Sample], list[Sample]]:
    """The patient-grouped (train, validation) split recorded in ``config``, rebuilt from ``data_dir/train``
    and checked against the validation patients it lists."""
    split = config.train["split"]
    train, val = split_by_patient(list_samples(Path(data_dir) / "train"), split["val_fraction"], split["seed"])
    if {s.patient for s in val} != set(split["val_patients"]):
        raise DataError(f"{data_dir}: the validation split differs from the one recorded in the weights' config")
    return train, val


def validation_samples(data_dir: str | Path, config: ModelConfig) -> list[Sample]:
    """The validation side of :func:`recorded_split`."""
    return recorded_split(data_dir, config)[1]


def predict_logits(
    model: torch.nn.Module, samples: list[Sample], batch_size: int = 64, flip: bool = False
) -> np.ndarray:
    """Raw logits for each sample, decoded and preprocessed as in the app (``flip``: mean with the mirror)."""
    size = model.pretrained_cfg["input_size"][-1]
    return batched_logits(model, decode_samples(samples, size), batch_size, flip)


@dataclass
class Member:
    """One model of an evaluation: its calibration, threshold and raw logits by shift."""

    config: ModelConfig
    logits: dict[str, np.ndarray]
    adaptation: dict[str, str] = field(default_factory=dict)  # by shift: what site adaptation did

    def probabilities(self, shift: str = CLEAN) -> np.ndarray:
        return probabilities(self.logits[shift], self.config.temperature, self.config.logit_bias)


class ShiftedImages(dict):
    """Shift name → the images changed by it, each made once on first use (shared by every member)."""

    def __init__(self, images_u8: torch.Tensor):
        super().__init__({CLEAN: images_u8})
        self.digest = hashlib.sha256(images_u8.numpy().tobytes()).hexdigest()[:16]

    def __missing__(self, name: str) -> torch.Tensor:
        self[name] = apply_shift(shift_by_name(name), self[CLEAN])
        return self[name]


def shifted_logits(
    model: torch.nn.Module,
    config: ModelConfig,
    images_u8: torch.Tensor | ShiftedImages,
    shifts: Iterable[Shift] = BANK,
    flip: bool = False,
    cache_dir: str | Path | None = ".cache",
) -> dict[str, np.ndarray]:
    """Raw logits on the clean images and on each shifted copy, reusing the on-disk cache."""
    images = images_u8 if isinstance(images_u8, ShiftedImages) else ShiftedImages(images_u8)
    digest = images.digest
    fov = f"-fov{config.fov['sha256'][:8]}" if config.fov else ""  # the crop changes the logits too
    name = f"{config.weights_sha256[:16]}{fov}-{digest}-flip{int(flip)}.npz"
    path = Path(cache_dir) / "logits" / name if cache_dir else None
    known = dict(np.load(path)) if path and path.exists() else {}
    wanted = [CLEAN, *(s.name for s in shifts)]
    for name in wanted:
        if name not in known:
            known[name] = batched_logits(model, images[name], flip=flip)
            log.info("logits under %s: %d images", name, len(images[name]))
    if path and config.weights_sha256:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, **known)
    return {name: known[name] for name in wanted}


def combined(members: list[Member], shift: str = CLEAN) -> tuple[np.ndarray, float]:
    """An ensemble's answer: the mean of the members' calibrated probabilities, at the mean threshold."""
    probs = np.mean([m.probabilities(shift) for m in members], axis=0)
    return probs, float(np.mean([m.config.threshold for m in members]))


def stress_metrics(members: list[Member], labels: np.ndarray, shifts: Iterable[Shift] = BANK) -> dict:
    """``{"stress": {name: {auc, sensitivity, specificity, accuracy, ece}}, "stress_worst": {...}}``."""
    stress = {}
    for shift in shifts:
        probs, threshold = combined(members, shift.name)
        metrics = binary_metrics(probs, labels, threshold)
        stress[shift.name] = {key: metrics[key] for key in STRESS_FIELDS}
    worst = {key: pick(entry[key] for entry in stress.values()) for key, pick in WORST.items()}
    return {"stress": stress, "stress_worst": worst}


def clean_metrics(members: list[Member], labels: np.ndarray) -> dict:
    """Metrics at the weights' own threshold, with a bootstrap AUC interval."""
    probs, threshold = combined(members)
    metrics = binary_metrics(probs, labels, threshold)
    if 0 < labels.sum() < len(labels):
        metrics["auc_ci95"] = list(auc_confidence_interval(probs, labels))
    return metrics


def load_members(
    weights: list[str | Path],
    images_u8: torch.Tensor | ShiftedImages,
    shifts: Iterable[Shift] = (),
    flip: bool = False,
    cache_dir: str | Path | None = ".cache",
    adapt: bool = False,
) -> list[Member]:
    """Load each weights folder and compute its logits on the images, clean and under ``shifts``.

    An ensemble folder is one Member whose logits are its members' mean calibrated logit, the
    quantity its own temperature, bias and threshold apply to (as in ``Predictor``). ``adapt``:
    each set of images (the clean ones, each shifted copy) is one site's batch, adapted on itself
    (``cxr.adapt``; not cached).
    """
    shifts = tuple(shifts)
    images = images_u8 if isinstance(images_u8, ShiftedImages) else ShiftedImages(images_u8)
    members = []
    for folder in map(Path, weights):
        if is_ensemble(folder):
            config = ModelConfig.from_json(folder / ENSEMBLE_NAME)
            inner = load_members([folder / name for name in config.members], images, shifts, flip, cache_dir, adapt)
            members.append(Member(config, mean_calibrated_logits(inner), inner[0].adaptation))
            continue
        model, config = load_model(folder)
        if model.pretrained_cfg["input_size"][-1] != images[CLEAN].shape[-1]:
            raise ValueError(f"{folder}: input size differs from the other members'")
        if adapt:
            members.append(site_adapted_member(model, config, OodScorer.from_folder(folder, config), images, shifts))
        else:
            members.append(Member(config, shifted_logits(model, config, images, shifts, flip, cache_dir)))
    return members


def site_adapted_member(
    model: torch.nn.Module,
    config: ModelConfig,
    ood: OodScorer | None,
    images: ShiftedImages,
    shifts: Iterable[Shift] = (),
) -> Member:
    """A Member whose logits on each set of images (clean, each shift) come from the model adapted to
    that set as one site's batch (``ood``: the check that tests it for two sources)."""
    logits, messages = {}, {}
    for name in [CLEAN, *(s.name for s in shifts)]:
        logits[name], reports = adapted_logits(model, config, images[name], ood=ood)
        messages[name] = reports[0].message()
    return Member(config, logits, messages)


def mean_calibrated_logits(members: list[Member]) -> dict[str, np.ndarray]:
    """By shift, the mean over members of ``logit / temperature + bias``: an ensemble's logit."""
    return {
        name: np.mean([m.logits[name] / m.config.temperature + m.config.logit_bias for m in members], axis=0)
        for name in members[0].logits
    }


def evaluate(
    weights: str | Path | list[str | Path],
    samples: list[Sample],
    plots: str | Path | None = None,
    flip: bool = False,
    stress: bool = False,
    images_u8: torch.Tensor | None = None,
    cache_dir: str | Path | None = ".cache",
    adapt: bool = False,
) -> dict:
    """Clean metrics (and, with ``stress``, the bank's) of one model or an ensemble on ``samples``;
    ``adapt``: with site adaptation on the images (and on each shifted copy) as one batch."""
    weights = [weights] if isinstance(weights, str | Path) else list(weights)
    if images_u8 is None:
        images_u8 = decode_samples(samples, read_config(weights[0]).input_size)
    labels = np.array([s.label for s in samples])
    members = load_members(weights, images_u8, BANK if stress else (), flip, cache_dir, adapt)
    report = clean_metrics(members, labels)
    if adapt:
        report["adaptation"] = members[0].adaptation[CLEAN]
    if stress:
        report.update(stress_metrics(members, labels))
    if plots:
        from cxr.plots import save_plots

        probs, threshold = combined(members)
        save_plots(probs, labels, threshold, plots)
    return report


def read_config(folder: str | Path) -> ModelConfig:
    """The config of a weights folder or an ensemble folder."""
    folder = Path(folder)
    return ModelConfig.from_json(folder / (ENSEMBLE_NAME if is_ensemble(folder) else "config.json"))


def cached_images(
    samples: list[Sample], config: ModelConfig, side: str, cache_dir: str | Path = ".cache"
) -> torch.Tensor:
    """One side (``"train"`` or ``"val"``) of the recorded split as uint8 tensors, decoded once into
    the same tensor cache train.py uses."""
    seed, size = config.train["split"]["seed"], config.input_size
    return decode_samples(samples, size, cache_file(cache_dir, side, seed, size))


def split_images(
    data_dir: str | Path, config: ModelConfig, cache_dir: str | Path = ".cache"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Both sides of the recorded split as uint8 tensors, through train.py's tensor cache."""
    train, val = recorded_split(data_dir, config)
    return cached_images(train, config, "train", cache_dir), cached_images(val, config, "val", cache_dir)
