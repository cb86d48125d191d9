"""Assemble weights folders into one ensemble folder, calibrated by the stress rule.

    python -m cxr.ensemble --members runs/a runs/b weights/efficientnet_lite0 --out weights/ensemble

Each member is copied into a subfolder as it is (its own calibration, threshold and out-of-distribution
check); ``ensemble.json`` records the members and the temperature, bias and threshold fitted on their
mean calibrated logit by the same rule as one model (``cxr.calibrate``): clean and shift-stressed
validation copies pooled, sensitivity >= the target on both. ``Predictor.from_folder`` serves it.
"""

from __future__ import annotations

import argparse
import logging
import shutil
from pathlib import Path

import numpy as np

from cxr.calibrate import calibrate
from cxr.evaluation import load_members, mean_calibrated_logits, validation_images, validation_samples
from cxr.folder import staged, write_records
from cxr.model import CONFIG_NAME, WEIGHTS_NAME, ModelConfig, same_split
from cxr.ood import OOD_NAME
from cxr.stress import BANK

log = logging.getLogger(__name__)

MEMBER_FILES = (CONFIG_NAME, WEIGHTS_NAME, OOD_NAME, "README.md")


def build_ensemble(
    members: list[Path], out: Path, data_dir: str | Path, target_sensitivity: float = 0.97, cache_dir: str = ".cache"
) -> ModelConfig:
    """Copy ``members`` into ``out``, fit the ensemble's calibration and write ``ensemble.json``."""
    configs = [ModelConfig.from_json(m / CONFIG_NAME) for m in members]
    if any(not same_split(c, configs[0]) for c in configs):
        raise ValueError("ensemble members must share one validation split")
    names = [m.name for m in members]
    if len(set(names)) != len(names):
        raise ValueError(f"member folder names must differ: {names}")
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
    images = validation_images(data_dir, first, cache_dir)
    labels = np.array([s.label for s in validation_samples(data_dir, first)])
    with staged(out) as staging:
        for member, name in zip(members, names, strict=True):
            (staging / name).mkdir()
            for file in MEMBER_FILES:
                if (member / file).is_file():
                    shutil.copy2(member / file, staging / name / file)
        inner = load_members([staging / name for name in names], images, BANK, cache_dir=cache_dir)
        calibrate(config, mean_calibrated_logits(inner), labels, target_sensitivity)
        write_records(staging, config, published_as=out)
    return config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", nargs="+", required=True, type=Path, help="weights folders (one split)")
    parser.add_argument("--out", required=True, type=Path, help="the ensemble folder to write")
    parser.add_argument("--data", default="../shared/data/chest_xray", help="folder with train/")
    parser.add_argument("--target-sensitivity", type=float, default=0.97)
    parser.add_argument("--cache-dir", default=".cache", help="decoded images and logits cache")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    config = build_ensemble(args.members, args.out, args.data, args.target_sensitivity, args.cache_dir)
    log.info(
        "wrote %s: T=%.3f bias=%.3f threshold=%.3f val %s worst %s",
        args.out,
        config.temperature,
        config.logit_bias,
        config.threshold,
        config.val_metrics,
        config.stress_metrics.get("stress_worst"),
    )


if __name__ == "__main__":
    main()
