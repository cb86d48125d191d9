"""Assemble weights folders into one ensemble folder, calibrated by the rule that transfers best (cxr.calibrate).

Each member is copied into a subfolder as it is (its own calibration, threshold and out-of-distribution
check); ``ensemble.json`` records the members and the temperature, bias and threshold fitted on their
mean calibrated logit by the same rule as one model (``cxr.calibrate``): clean and shift-stressed
validation copies pooled, sensitivity >= the target on both. ``Predictor.from_folder`` serves it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from cxr.calibrate import calibrate
from cxr.evaluation import cached_images, load_members, mean_calibrated_logits, validation_samples
from cxr.folder import staged, write_records
from cxr.fov import FOV_DIR
from cxr.model import CONFIG_NAME, WEIGHTS_NAME, ModelConfig, ModelLoadError, load_model, same_split
from cxr.ood import OOD_NAME
from cxr.stress import BANK

MEMBER_FILES = (CONFIG_NAME, WEIGHTS_NAME, OOD_NAME, "README.md")


def build_ensemble(
    members: list[Path],
    out: Path,
    data_dir: str | Path,
    target_sensitivity: float = 0.97,
    cache_dir: str = ".cache",
    rule: str = "best",
) -> ModelConfig:
    """Copy ``members`` into ``out``, fit the ensemble's calibration by ``rule`` (``cxr.calibrate``; best:
    by transfer) and write ``ensemble.json``."""
    configs = [load_model(m)[1] for m in members]  # a broken member fails here, named, before any work
    if any(not same_split(c, configs[0]) for c in configs):
        raise ModelLoadError(f"ensemble members must share one validation split: {members}")
    names = [m.name for m in members]
    if len(set(names)) != len(names):
        raise ModelLoadError(f"ensemble member folder names must differ: {names}")
    first = configs[0]
    config = ModelConfig(
        architecture="ensemble",
        in_chans=first.in_chans,
        input_size=first.input_size,
        mean=first.mean,
        std=first.std,
        labels=first.labels,
        members=names,
        train={
            "split": first.train["split"],
            "members": {name: c.train.get("args", {}) for name, c in zip(names, configs, strict=True)},
            "minutes": round(sum(c.train.get("minutes", 0) for c in configs), 1),
            "train_images": first.train["train_images"],
            "val_images": first.train["val_images"],
            "args": {"target_sensitivity": target_sensitivity},
        },
    )
    samples = validation_samples(data_dir, first)
    images, labels = cached_images(samples, first, "val", cache_dir), np.array([s.label for s in samples])
    with staged(out) as staging:
        for member, name in zip(members, names, strict=True):
            (staging / name).mkdir()
            for file in MEMBER_FILES:
                if (member / file).is_file():
                    shutil.copy2(member / file, staging / name / file)
            if (member / FOV_DIR).is_dir():  # a member that crops to the lungs keeps its segmenter
                shutil.copytree(member / FOV_DIR, staging / name / FOV_DIR)
        inner = load_members([staging / name for name in names], images, BANK, cache_dir=cache_dir)
        patients = np.array([s.patient for s in samples])  # the transfer folds keep each child on one side
        calibrate(config, mean_calibrated_logits(inner), labels, target_sensitivity, rule, patients)
        write_records(staging, config, published_as=out)
    return config
