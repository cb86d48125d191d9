"""Classification metrics, temperature fitting and threshold choice (on validation data only)."""

from __future__ import annotations

import numpy as np
from scipy.special import expit
from sklearn.metrics import confusion_matrix, roc_auc_score, roc_curve


def probabilities(logits: np.ndarray | float, temperature: float = 1.0, bias: float = 0.0) -> np.ndarray:
    """Calibrated P(pneumonia) = sigmoid(logit / temperature + bias)."""
    return expit(np.asarray(logits, dtype=np.float64) / temperature + bias)


def fit_calibration(logits: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Platt scaling fitted on validation: (temperature, bias) minimizing the log-loss.

    A bias is needed besides the temperature: a class-weighted loss shifts every logit.
    """
    from sklearn.linear_model import LogisticRegression

    x = np.asarray(logits, dtype=np.float64).reshape(-1, 1)
    platt = LogisticRegression(C=np.inf).fit(x, np.asarray(labels))
    slope = float(platt.coef_[0, 0])
    if slope <= 0:  # a model no better than chance: keep its logits as they are
        return 1.0, 0.0
    return 1.0 / slope, float(platt.intercept_[0])


def screening_threshold(probs: np.ndarray, labels: np.ndarray, target_sensitivity: float = 0.97) -> float:
    """The highest threshold that still reaches ``target_sensitivity``: best specificity at that recall."""
    _, tpr, thresholds = roc_curve(labels, probs, drop_intermediate=False)
    reaching = thresholds[tpr >= target_sensitivity]
    return float(min(reaching.max(), 1.0))


def binary_metrics(probs: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, float]:
    """AUC, accuracy, sensitivity and specificity at ``threshold`` (positive = pneumonia)."""
    labels = np.asarray(labels)
    predicted = (np.asarray(probs) >= threshold).astype(int)
    tn, fp, fn, tp = confusion_matrix(labels, predicted, labels=[0, 1]).ravel()
    return {
        "n": int(len(labels)),
        "auc": float(roc_auc_score(labels, probs)) if len(set(labels.tolist())) == 2 else float("nan"),
        "accuracy": float((tp + tn) / len(labels)),
        "sensitivity": float(tp / (tp + fn)) if tp + fn else float("nan"),
        "specificity": float(tn / (tn + fp)) if tn + fp else float("nan"),
        "threshold": float(threshold),
    }
