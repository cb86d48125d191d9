"""Fit temperature, bias and screening threshold on validation logits, by the stress rule.

The rule (README "Holding up under acquisition changes"): Platt temperature and bias are fitted by log-loss on
the clean validation X-rays and every shifted copy of them pooled (``cxr.stress.BANK``), and the
threshold is the highest that keeps sensitivity >= the target both on the clean split and on that
pool. Fitted on the clean split alone, both were over-confident on X-rays from another period.
The "clean" rule keeps the old clean-only fit, to measure the difference (``cxr.cli.calibrate``).
"""

from __future__ import annotations

import numpy as np

from cxr.metrics import auc_confidence_interval, binary_metrics, fit_calibration, probabilities, screening_threshold
from cxr.model import ModelConfig

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


if __name__ == "__main__":  # python -m cxr.calibrate: the command is cxr.cli.calibrate
    from cxr.cli.calibrate import main

    raise SystemExit(main())
