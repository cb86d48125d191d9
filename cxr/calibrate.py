"""Fit temperature, bias and screening threshold on a model's own validation split.

    python -m cxr.calibrate --weights weights/efficientnet_lite0 --data ../shared/data/chest_xray

train.py ends with the same step; this command re-runs it on saved weights (the weights file is
not touched, only config.json).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np

from cxr.metrics import auc_confidence_interval, binary_metrics, fit_calibration, probabilities, screening_threshold
from cxr.model import CONFIG_NAME, ModelConfig

log = logging.getLogger(__name__)


def calibrate(config: ModelConfig, logits: np.ndarray, labels: np.ndarray, target_sensitivity: float) -> None:
    """Set ``config``'s temperature, logit bias, threshold and validation metrics from validation logits."""
    config.temperature, config.logit_bias = fit_calibration(logits, labels)
    probs = probabilities(logits, config.temperature, config.logit_bias)
    config.threshold = screening_threshold(probs, labels, target_sensitivity)
    config.val_metrics = binary_metrics(probs, labels, config.threshold)
    config.val_metrics["auc_ci95"] = list(auc_confidence_interval(probs, labels))


def main() -> None:
    from cxr.card import write_model_card
    from cxr.evaluate import predict_logits, validation_samples
    from cxr.model import load_model

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", required=True, help="weights folder to recalibrate in place")
    parser.add_argument("--data", default="../shared/data/chest_xray", help="folder with train/")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)

    weights = Path(args.weights)
    model, config = load_model(weights)
    samples = validation_samples(args.data, config)
    logits = predict_logits(model, samples)
    calibrate(config, logits, np.array([s.label for s in samples]), config.train["args"]["target_sensitivity"])
    config.to_json(weights / CONFIG_NAME)
    metrics_file = weights / "metrics.json"
    if metrics_file.exists():  # keep the training record's final figures in step with the config
        record = json.loads(metrics_file.read_text())
        record = {"history": record.get("history", []), "val": config.val_metrics}
        metrics_file.write_text(json.dumps(record, indent=2) + "\n")
    write_model_card(weights)
    log.info(
        "recalibrated %s: T=%.3f bias=%.3f threshold=%.3f %s",
        weights,
        config.temperature,
        config.logit_bias,
        config.threshold,
        config.val_metrics,
    )


if __name__ == "__main__":
    main()
