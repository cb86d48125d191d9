"""Classification metrics, temperature fitting and threshold choice (on validation data only)."""

from __future__ import annotations

import numpy as np
import torch

# scikit-learn and SciPy are imported where they are used: the app imports this module for
# ``probabilities`` only, and importing them would add about a second to its cold start (SciPy's
# expit alone 0.5-0.7 s; torch, loaded anyway, has the same sigmoid).


def probabilities(logits: np.ndarray | float, temperature: float = 1.0, bias: float = 0.0) -> np.ndarray:
    """Calibrated P(pneumonia) = sigmoid(logit / temperature + bias), in float64."""
    scaled = np.asarray(np.asarray(logits, dtype=np.float64) / temperature + bias)
    result = torch.sigmoid(torch.from_numpy(scaled)).numpy()
    return result if result.ndim else result[()]  # a scalar for a scalar, as a NumPy ufunc gives


def fit_calibration(
    logits: np.ndarray, labels: np.ndarray, sample_weight: np.ndarray | None = None
) -> tuple[float, float]:
    """Platt scaling fitted on validation: (temperature, bias) minimizing the (weighted) log-loss.

    A bias is needed besides the temperature: a class-weighted loss shifts every logit.
    """
    from sklearn.linear_model import LogisticRegression

    x = np.asarray(logits, dtype=np.float64).reshape(-1, 1)
    platt = LogisticRegression(C=np.inf).fit(x, np.asarray(labels), sample_weight=sample_weight)
    slope = float(platt.coef_[0, 0])
    if slope <= 0:  # a model no better than chance: keep its logits as they are
        return 1.0, 0.0
    return 1.0 / slope, float(platt.intercept_[0])


def screening_threshold(probs: np.ndarray, labels: np.ndarray, target_sensitivity: float = 0.97) -> float:
    """The highest threshold that still reaches ``target_sensitivity``: best specificity at that recall."""
    from sklearn.metrics import roc_curve

    _, tpr, thresholds = roc_curve(labels, probs, drop_intermediate=False)
    reaching = thresholds[tpr >= target_sensitivity]
    return float(min(reaching.max(), 1.0))


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """ECE over ``bins`` equal-width confidence bins of P(pneumonia): sum of |observed - predicted| by bin weight."""
    probs, labels = np.asarray(probs, dtype=np.float64), np.asarray(labels)
    which = np.minimum((probs * bins).astype(int), bins - 1)
    observed = np.bincount(which, weights=labels, minlength=bins)
    predicted = np.bincount(which, weights=probs, minlength=bins)
    return float(np.abs(observed - predicted).sum() / len(probs))


def auc_confidence_interval(
    probs: np.ndarray, labels: np.ndarray, resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """95 % bootstrap (BCa) interval of the ROC AUC, resampling images."""
    from scipy.stats import bootstrap
    from sklearn.metrics import roc_auc_score

    result = bootstrap(
        (np.asarray(labels), np.asarray(probs)),
        lambda y, p: roc_auc_score(y, p) if 0 < y.sum() < len(y) else np.nan,
        paired=True,
        vectorized=False,
        n_resamples=resamples,
        rng=np.random.default_rng(seed),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def _ratio(numerator: int, denominator: int) -> float | None:
    """numerator / denominator, or None (JSON null) where it is undefined."""
    return float(numerator / denominator) if denominator else None


def binary_metrics(probs: np.ndarray, labels: np.ndarray, threshold: float) -> dict:
    """Screening metrics at ``threshold`` (positive = pneumonia) and calibration of ``probs``."""
    from sklearn.metrics import brier_score_loss, confusion_matrix, roc_auc_score

    labels, probs = np.asarray(labels), np.asarray(probs, dtype=np.float64)
    predicted = (probs >= threshold).astype(int)
    tn, fp, fn, tp = (int(x) for x in confusion_matrix(labels, predicted, labels=[0, 1]).ravel())
    both_classes = len(set(labels.tolist())) == 2
    return {
        "n": int(len(labels)),
        "auc": float(roc_auc_score(labels, probs)) if both_classes else None,
        "accuracy": _ratio(tp + tn, len(labels)),
        "sensitivity": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
        "ppv": _ratio(tp, tp + fp),
        "npv": _ratio(tn, tn + fn),
        "threshold": float(threshold),
        "ece": expected_calibration_error(probs, labels),
        "brier": float(brier_score_loss(labels, probs, pos_label=1)),
        "confusion": [[tn, fp], [fn, tp]],
    }
