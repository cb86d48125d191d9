"""Calibration, threshold choice and batch augmentation on data with known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import log_loss

from cxr.data import Augment
from cxr.metrics import binary_metrics, fit_calibration, probabilities, screening_threshold


def test_platt_calibration_recovers_scale_and_shift():
    rng = np.random.default_rng(0)
    true_logit = rng.normal(0, 2, 20_000)
    labels = (rng.random(20_000) < 1 / (1 + np.exp(-true_logit))).astype(int)
    raw = (true_logit - 1.0) * 3.0  # over-confident and shifted, as a pos_weight < 1 leaves them
    temperature, bias = fit_calibration(raw, labels)
    assert temperature == pytest.approx(3.0, rel=0.05)
    assert bias == pytest.approx(1.0, abs=0.1)
    calibrated = probabilities(raw, temperature, bias)
    assert log_loss(labels, calibrated) < log_loss(labels, probabilities(raw))


def test_screening_threshold_reaches_the_target_sensitivity_and_no_lower_threshold_is_needed():
    rng = np.random.default_rng(1)
    labels = np.r_[np.zeros(300, int), np.ones(700, int)]
    probs = np.clip(np.r_[rng.beta(2, 5, 300), rng.beta(5, 2, 700)], 0, 1)
    threshold = screening_threshold(probs, labels, 0.97)
    assert binary_metrics(probs, labels, threshold)["sensitivity"] >= 0.97
    above = np.sort(probs[labels == 1])
    higher = above[above > threshold][0]  # the next positive score up misses the target
    assert binary_metrics(probs, labels, higher)["sensitivity"] < 0.97


def test_binary_metrics_counts():
    metrics = binary_metrics(np.array([0.1, 0.6, 0.4, 0.9]), np.array([0, 0, 1, 1]), 0.5)
    assert metrics["accuracy"] == 0.5 and metrics["sensitivity"] == 0.5 and metrics["specificity"] == 0.5
    assert metrics["auc"] == 0.75


def test_augment_keeps_shape_and_range_and_differs_per_image():
    batch = torch.full((8, 1, 64, 64), 128, dtype=torch.uint8)
    batch[:, :, 16:48, 16:48] = 230
    out = Augment()(batch, torch.Generator().manual_seed(0))
    assert out.shape == (8, 1, 64, 64) and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 1
    assert not torch.allclose(out[0], out[1])  # each image gets its own draw
    again = Augment()(batch, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)  # seeded


def test_augment_without_change_is_identity():
    batch = torch.randint(0, 256, (2, 1, 32, 32), dtype=torch.uint8)
    still = Augment(degrees=0, translate=0, scale=(1, 1), brightness=0, contrast=0, gamma=0)
    assert torch.allclose(still(batch), batch.float() / 255, atol=1e-5)


def test_probabilities_are_scipys_expit_without_scipy():
    from scipy.special import expit

    logits = np.linspace(-800, 800, 2001)
    np.testing.assert_allclose(probabilities(logits, 1.7, 0.3), expit(logits / 1.7 + 0.3), rtol=1e-12, atol=1e-300)
    scalar = probabilities(1.3, 2.0, 0.1)
    assert isinstance(scalar, np.floating) and scalar == pytest.approx(expit(1.3 / 2.0 + 0.1), abs=1e-15)
