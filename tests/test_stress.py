"""The shift-stress bank and evaluation: seeded changes, every field checked against scikit-learn."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from sklearn.metrics import confusion_matrix, roc_auc_score

from cxr.augment import ShiftAugment
from cxr.data import Sample, decode_samples, list_samples
from cxr.evaluation import STRESS_FIELDS, evaluate, validation_samples
from cxr.forward import batched_logits
from cxr.hub import DEFAULT_MODEL, WEIGHTS_DIR
from cxr.metrics import expected_calibration_error, probabilities
from cxr.model import load_model
from cxr.stress import BANK, apply_shift, shift_by_name
from tests.conftest import EXAMPLES, ROOT, true_class

WEIGHTS = WEIGHTS_DIR / DEFAULT_MODEL


@pytest.fixture(scope="module")
def example_images() -> torch.Tensor:
    return decode_samples([Sample(path, int(true_class(path) == "PNEUMONIA")) for path in EXAMPLES], 224)


def test_bank_covers_the_acquisition_changes_the_issue_names():
    kinds = {shift.kind for shift in BANK}
    assert len(BANK) >= 8 and len({s.name for s in BANK}) == len(BANK)
    for kind in ("exposure", "contrast", "blur", "sharpening", "detector noise", "compression", "resize path"):
        assert kind in kinds
    for name in ("crop_8", "crop_15", "crop_22", "noise_8", "jpeg_20", "blur_1.5", "gamma_0.7", "contrast_1.3"):
        shift_by_name(name)


@pytest.mark.parametrize("shift", BANK, ids=lambda s: s.name)
def test_each_shift_is_seeded_keeps_shape_and_changes_the_image(shift, example_images):
    once, again = apply_shift(shift, example_images), apply_shift(shift, example_images)
    assert once.dtype == torch.uint8 and once.shape == example_images.shape
    assert torch.equal(once, again), "the bank must give the same images on every run"
    assert not torch.equal(once, example_images)


def test_noise_depends_on_the_seed(example_images):
    noise = shift_by_name("noise_8")
    assert not torch.equal(apply_shift(noise, example_images, seed=0), apply_shift(noise, example_images, seed=1))


def test_framing_crop_zooms_in():
    ramp = torch.arange(224, dtype=torch.uint8).repeat(224, 1)[None, None]  # left dark, right bright
    cropped = apply_shift(shift_by_name("crop_22"), ramp)
    assert cropped[0, 0, 0, 0] > 40 and cropped[0, 0, 0, -1] < 185  # the outer 22 % is gone


def test_shift_augment_draws_each_image_on_its_own(example_images):
    torch.manual_seed(0)
    batch = example_images[:1].repeat(6, 1, 1, 1)
    out = ShiftAugment(224)(batch)
    assert out.shape == batch.shape and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 1
    assert len({round(float(image.mean()), 4) for image in out}) > 1


@pytest.mark.slow
def test_stress_metrics_agree_with_scikit_learn(data_dir, tmp_path):
    """evaluate(stress=True) on 30 validation X-rays; two shifts recomputed by hand with scikit-learn."""
    _, config = load_model(WEIGHTS)
    samples = validation_samples(data_dir, config)[::25]
    labels = np.array([s.label for s in samples])
    assert 0 < labels.sum() < len(labels)
    report = evaluate(WEIGHTS, samples, stress=True, cache_dir=tmp_path)
    assert set(report["stress"]) == {s.name for s in BANK}
    model, _ = load_model(WEIGHTS)
    images = decode_samples(samples, config.input_size)
    for name in ("crop_15", "noise_8"):
        logits = batched_logits(model, apply_shift(shift_by_name(name), images))
        probs = probabilities(logits, config.temperature, config.logit_bias)
        tn, fp, fn, tp = confusion_matrix(labels, probs >= config.threshold).ravel()
        got = report["stress"][name]
        assert got["auc"] == pytest.approx(roc_auc_score(labels, probs), abs=1e-6)
        assert got["sensitivity"] == pytest.approx(tp / (tp + fn))
        assert got["specificity"] == pytest.approx(tn / (tn + fp))
        assert got["accuracy"] == pytest.approx((tp + tn) / len(labels))
        assert got["ece"] == pytest.approx(expected_calibration_error(probs, labels), abs=1e-6)
    for field in STRESS_FIELDS:
        values = [entry[field] for entry in report["stress"].values()]
        assert report["stress_worst"][field] == (max(values) if field == "ece" else min(values))
    cached = evaluate(WEIGHTS, samples, stress=True, cache_dir=tmp_path)  # from the logits cache
    assert cached["stress"] == report["stress"]


@pytest.mark.slow
def test_evaluate_command_stress_json(originals_dir):
    command = [sys.executable, "-m", "cxr.cli.evaluate", "--data", str(originals_dir), "--stress", "--json"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["n"] == len(list_samples(originals_dir)) == 16
    assert set(report["stress"]) == {s.name for s in BANK}
    assert set(report["stress_worst"]) == set(STRESS_FIELDS)
    for metrics in report["stress"].values():
        assert 0 <= metrics["specificity"] <= 1 and 0 <= metrics["ece"] <= 1


@pytest.mark.slow
def test_stress_rule_fits_on_every_copy_and_records_the_bank():
    """calibrate(): temperature, bias and threshold from the pooled copies; stress metrics at that threshold."""
    from cxr.calibrate import calibrate
    from cxr.model import ModelConfig

    rng = np.random.default_rng(0)
    labels = np.array([0] * 40 + [1] * 60)
    clean = labels * 4.0 - 2.0 + rng.normal(0, 1, len(labels))
    shifted = clean + 2.5  # a shift that pushes every X-ray towards pneumonia, as tighter framing did
    config = ModelConfig("resnet18")
    calibrate(config, {"clean": clean, "crop_15": shifted}, labels, 0.97)
    pooled = probabilities(np.concatenate([clean, shifted]), config.temperature, config.logit_bias)
    pooled_labels = np.tile(labels, 2)
    assert (pooled[pooled_labels == 1] >= config.threshold).mean() >= 0.97
    clean_probs = probabilities(clean, config.temperature, config.logit_bias)
    assert (clean_probs[labels == 1] >= config.threshold).mean() >= 0.97
    assert config.calibration["rule"] == "stress" and config.calibration["fit_on"] == ["clean", "crop_15"]
    assert set(config.stress_metrics["stress"]) == {"crop_15"}
    clean_only = ModelConfig("resnet18")
    calibrate(clean_only, {"clean": clean}, labels, 0.97)
    assert clean_only.calibration["rule"] == "clean" and clean_only.stress_metrics == {}
    # Pooling the shifted copy widens the fitted temperature: less confident where shift moves logits.
    assert config.temperature > clean_only.temperature
