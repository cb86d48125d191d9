"""Patient IDs, the patient-grouped split, and the bundled weights on their own validation split."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from cxr.data import list_samples, patient_id, split_by_patient
from cxr.evaluate import evaluate, validation_samples
from cxr.hub import DEFAULT_MODEL, WEIGHTS_DIR
from cxr.model import ModelConfig
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


def test_bundled_weights_on_their_recorded_validation_split(data_dir, train_samples):
    """Validation AUC >= 0.90 on the patients the config says were held out (none used in training)."""
    weights = WEIGHTS_DIR / DEFAULT_MODEL
    config = ModelConfig.from_json(weights / "config.json")
    val = validation_samples(data_dir, config)  # raises if the split cannot be rebuilt exactly
    split = config.train["split"]
    trained_on, _ = split_by_patient(train_samples, split["val_fraction"], split["seed"])
    assert len(trained_on) == config.train["train_images"] and len(val) == config.train["val_images"]
    assert not {s.patient for s in trained_on} & {s.patient for s in val}
    metrics = evaluate(weights, val)
    assert metrics["auc"] >= 0.90, metrics
    assert metrics["auc"] == pytest.approx(config.val_metrics["auc"], abs=0.005)


def test_evaluate_command_prints_json(data_dir):
    command = [sys.executable, "-m", "cxr.evaluate", "--data", str(data_dir.parent / "val_originals"), "--json"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout.strip().splitlines()[-1])
    assert metrics["n"] == 16
    assert metrics["sensitivity"] * 8 == round(metrics["sensitivity"] * 8)  # a count out of 8 pneumonia
    assert metrics["accuracy"] >= 0.75  # full-size uploads go through the same preprocessing
