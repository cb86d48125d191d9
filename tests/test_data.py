"""Patient IDs, the patient-grouped split, and the bundled weights on their own validation split."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.calibration import calibration_curve
from sklearn.metrics import (
    accuracy_score,
    brier_score_loss,
    confusion_matrix,
    precision_score,
    recall_score,
    roc_auc_score,
)

from cxr.data import list_samples, patient_id, split_by_patient
from cxr.evaluation import predict_logits, validation_samples
from cxr.hub import DEFAULT_MODEL, WEIGHTS_DIR
from cxr.metrics import probabilities
from cxr.model import ModelConfig, load_model
from tests.conftest import ROOT


@pytest.mark.parametrize(
    ("name", "patient"),
    [
        ("person1000_bacteria_2931.jpeg", "person1000"),
        ("person1000_virus_1681.jpeg", "person1000"),
        ("IM-0115-0001.jpeg", "IM-0115"),
        ("NORMAL2-IM-0587-0001-0002.jpeg", "NORMAL2-IM-0587"),
        ("upload.png", "upload"),
    ],
)
def test_patient_id_from_file_name(name, patient):
    assert patient_id(name) == patient


@pytest.fixture(scope="module")
def train_samples(data_dir):
    return list_samples(data_dir / "train")


def test_split_keeps_patients_and_duplicates_on_one_side(train_samples, data_dir):
    train, val = split_by_patient(train_samples, 0.15, seed=0)
    assert len(train) + len(val) == len(train_samples)
    assert not {s.patient for s in train} & {s.patient for s in val}
    val_names = {s.path.name for s in val}
    for line in (data_dir / "DUPLICATES.txt").read_text().splitlines():
        sides = {name.split("/")[-1] in val_names for name in line.split()}
        assert len(sides) == 1, line


def test_split_is_stratified_and_seeded(train_samples):
    train, val = split_by_patient(train_samples, 0.15, seed=0)
    overall = np.mean([s.label for s in train_samples])
    assert abs(np.mean([s.label for s in val]) - overall) < 0.03
    assert 0.12 < len(val) / len(train_samples) < 0.18
    assert [s.path for s in split_by_patient(train_samples, 0.15, seed=0)[1]] == [s.path for s in val]
    assert [s.path for s in split_by_patient(train_samples, 0.15, seed=1)[1]] != [s.path for s in val]


@pytest.fixture(scope="module")
def val_report(data_dir, tmp_path_factory):
    """`python -m cxr.cli.evaluate --split val --json --plots` on the bundled weights, run once."""
    plots = tmp_path_factory.mktemp("plots")
    command = [
        sys.executable,
        "-m",
        "cxr.cli.evaluate",
        "--data",
        str(data_dir),
        "--split",
        "val",
        "--json",
        "--plots",
        str(plots),
    ]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1]), plots


@pytest.mark.slow
def test_bundled_weights_on_their_recorded_validation_split(data_dir, train_samples, val_report):
    """Validation AUC >= 0.90 on the patients the config says were held out (none used in training)."""
    config = ModelConfig.from_json(WEIGHTS_DIR / DEFAULT_MODEL / "config.json")
    val = validation_samples(data_dir, config)  # raises if the split cannot be rebuilt exactly
    split = config.train["split"]
    trained_on, _ = split_by_patient(train_samples, split["val_fraction"], split["seed"])
    assert len(trained_on) == config.train["train_images"] and len(val) == config.train["val_images"]
    assert not {s.patient for s in trained_on} & {s.patient for s in val}
    metrics, _ = val_report
    assert metrics["n"] == len(val)
    assert metrics["auc"] >= 0.90, metrics
    assert metrics["auc"] == pytest.approx(config.val_metrics["auc"], abs=1e-6)


@pytest.mark.slow
def test_evaluate_json_agrees_with_scikit_learn(data_dir, val_report):
    metrics, plots = val_report
    weights = WEIGHTS_DIR / DEFAULT_MODEL
    model, config = load_model(weights)
    samples = validation_samples(data_dir, config)
    labels = np.array([s.label for s in samples])
    probs = probabilities(predict_logits(model, samples), config.temperature, config.logit_bias)
    predicted = (probs >= config.threshold).astype(int)
    (tn, fp), (fn, tp) = confusion_matrix(labels, predicted).tolist()
    assert metrics["confusion"] == [[tn, fp], [fn, tp]]
    assert metrics["auc"] == pytest.approx(roc_auc_score(labels, probs))
    assert metrics["accuracy"] == pytest.approx(accuracy_score(labels, predicted))
    assert metrics["sensitivity"] == pytest.approx(recall_score(labels, predicted))
    assert metrics["specificity"] == pytest.approx(recall_score(labels, predicted, pos_label=0))
    assert metrics["ppv"] == pytest.approx(precision_score(labels, predicted))
    assert metrics["npv"] == pytest.approx(precision_score(labels, predicted, pos_label=0))
    assert metrics["brier"] == pytest.approx(brier_score_loss(labels, probs))
    assert metrics["threshold"] == pytest.approx(config.threshold)
    low, high = metrics["auc_ci95"]
    assert low < metrics["auc"] < high <= 1.0
    # ECE from scikit-learn's own 15-bin reliability curve, weighted by bin size
    observed, predicted_mean = calibration_curve(labels, probs, n_bins=15, strategy="uniform")
    weights_per_bin = np.bincount(np.minimum((probs * 15).astype(int), 14), minlength=15)
    weights_per_bin = weights_per_bin[weights_per_bin > 0] / len(probs)
    assert metrics["ece"] == pytest.approx(float(np.sum(weights_per_bin * np.abs(observed - predicted_mean))))
    for name in ("roc.png", "pr.png", "reliability.png", "confusion.png"):
        with Image.open(plots / name) as image:
            assert image.format == "PNG" and image.width > 200


@pytest.mark.slow
def test_evaluate_command_on_full_size_images(originals_dir):
    command = [sys.executable, "-m", "cxr.cli.evaluate", "--data", str(originals_dir), "--json"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout.strip().splitlines()[-1])
    assert metrics["n"] == 16
    assert sum(map(sum, metrics["confusion"])) == 16
    assert metrics["accuracy"] >= 0.75  # full-size uploads go through the same preprocessing


@pytest.mark.slow
@torch.no_grad()
def test_flip_tta_and_ensemble_levers(data_dir):
    """--flip-tta averages with the mirror image; an ensemble averages its members' calibrated probabilities."""
    from PIL import ImageOps

    from cxr.evaluation import evaluate
    from cxr.io import read_xray
    from cxr.model import preprocessing_for

    weights = WEIGHTS_DIR / DEFAULT_MODEL
    model, config = load_model(weights)
    samples = validation_samples(data_dir, config)[::40]  # 19 images, both classes
    preprocess = preprocessing_for(model)
    mirrored = np.array([float(model(preprocess(ImageOps.mirror(read_xray(s.path))))) for s in samples])
    plain, flipped = predict_logits(model, samples), predict_logits(model, samples, flip=True)
    np.testing.assert_allclose(flipped, (plain + mirrored) / 2, atol=1e-4)
    assert not np.allclose(plain, mirrored, atol=1e-3)  # the mirror is a different input
    alone, pair = evaluate(weights, samples), evaluate([weights, weights], samples)
    assert pair["auc"] == pytest.approx(alone["auc"]) and pair["confusion"] == alone["confusion"]
