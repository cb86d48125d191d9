"""Fit temperature, bias and screening threshold on a model's own validation split, by the stress rule.

    python -m cxr.calibrate --weights weights/efficientnet_lite0 --data ../shared/data/chest_xray

The rule (README "Holding up under acquisition changes"): Platt temperature and bias are fitted by log-loss on
the clean validation X-rays and every shifted copy of them pooled (``cxr.stress.BANK``), and the
threshold is the highest that keeps sensitivity >= the target both on the clean split and on that
pool. Fitted on the clean split alone, both were over-confident on X-rays from another period.
``--rule clean`` keeps the old clean-only fit, to measure the difference. train.py ends with the
same step; this command re-runs it on saved weights (the weights file is not touched, only config.json).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from cxr.metrics import auc_confidence_interval, binary_metrics, fit_calibration, probabilities, screening_threshold
from cxr.model import ModelConfig

log = logging.getLogger(__name__)

RULES = ("stress", "clean")


def calibrate(
    config: ModelConfig, logits: dict[str, np.ndarray], labels: np.ndarray, target_sensitivity: float
) -> None:
    """Set ``config``'s temperature, bias, threshold, validation and stress metrics.

    ``logits`` maps ``"clean"`` (and, for the stress rule, each shift's name) to raw validation
    logits; every entry is pooled for the fit and the threshold.
    """
    from cxr.evaluation import CLEAN, Member, stress_metrics
    from cxr.stress import BANK

    pooled = np.concatenate(list(logits.values()))
    pooled_labels = np.tile(labels, len(logits))
    config.temperature, config.logit_bias = fit_calibration(pooled, pooled_labels)
    probs = probabilities(pooled, config.temperature, config.logit_bias)
    clean = probabilities(logits[CLEAN], config.temperature, config.logit_bias)
    # Sensitivity must hold on the clean X-rays and on the pool of shifted ones: the lower threshold.
    config.threshold = min(
        screening_threshold(probs, pooled_labels, target_sensitivity),
        screening_threshold(clean, labels, target_sensitivity),
    )
    config.val_metrics = binary_metrics(clean, labels, config.threshold)
    config.val_metrics["auc_ci95"] = list(auc_confidence_interval(clean, labels))
    config.calibration = {
        "rule": "stress" if len(logits) > 1 else "clean",
        "fit_on": sorted(logits),
        "target_sensitivity": target_sensitivity,
    }
    shifts = [s for s in BANK if s.name in logits]
    config.stress_metrics = stress_metrics([Member(config, logits)], labels, shifts) if shifts else {}


def main() -> None:
    from cxr.evaluation import shifted_logits, validation_images, validation_samples
    from cxr.folder import staged, write_records
    from cxr.model import load_model
    from cxr.stress import BANK

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", required=True, help="weights folder to recalibrate in place")
    parser.add_argument("--data", default="../shared/data/chest_xray", help="folder with train/")
    parser.add_argument("--rule", choices=RULES, default="stress", help="pool the stress bank into the fit, or not")
    parser.add_argument("--cache-dir", default=".cache", help="decoded images and logits cache")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)

    weights = Path(args.weights)
    model, config = load_model(weights)
    labels = np.array([s.label for s in validation_samples(args.data, config)])
    images = validation_images(args.data, config, args.cache_dir)
    logits = shifted_logits(model, config, images, BANK if args.rule == "stress" else (), cache_dir=args.cache_dir)
    calibrate(config, logits, labels, config.train["args"]["target_sensitivity"])
    with staged(weights, update=True) as folder:  # the weights file is untouched; the records follow the config
        write_records(folder, config, published_as=weights)
    log.info(
        "recalibrated %s (%s rule): T=%.3f bias=%.3f threshold=%.3f val %s worst %s",
        weights,
        args.rule,
        config.temperature,
        config.logit_bias,
        config.threshold,
        config.val_metrics,
        config.stress_metrics.get("stress_worst"),
    )


if __name__ == "__main__":
    main()
