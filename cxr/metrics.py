"""Classification metrics, temperature fitting and threshold choice (on validation data only)."""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import expit
from sklearn.metrics import confusion_matrix, log_loss, roc_auc_score, roc_curve


def probabilities(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Calibrated P(pneumonia) from raw logits."""
    return expit(np.asarray(logits, dtype=np.float64) / temperature)


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature that minimizes validation negative log-likelihood."""
    logits, labels = np.asarray(logits, dtype=np.float64), np.asarray(labels)

    def nll(log_t: float) -> float:
        return log_loss(labels, probabilities(logits, np.exp(log_t)), labels=[0, 1])

    result = minimize_scalar(nll, bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    return float(np.exp(result.x))


def screening_threshold(probs: np.ndarray, labels: np.ndarray, target_sensitivity: float = 0.97) -> float:
    """The highest threshold that still reaches ``target_sensitivity``: best specificity at that recall."""
    _, tpr, thresholds = roc_curve(labels, probs)
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
