"""train.py end to end on a few dozen real images with a tiny timm model."""

from __future__ import annotations

import json
import subprocess
import sys

from cxr.inference import Predictor
from cxr.io import read_xray
from tests.conftest import EXAMPLES, ROOT


def test_train_smoke_run(data_dir, tmp_path):
    out = tmp_path / "run"
    command = [
        sys.executable,
        "train.py",
        "--model",
        "test_efficientnet",
        "--data",
        str(data_dir),
        "--out",
        str(out),
        "--limit",
        "48",
        "--epochs",
        "2",
        "--batch-size",
        "16",
        "--input-size",
        "96",
        "--cache-dir",
        str(tmp_path / "cache"),
    ]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("model.safetensors", "config.json", "metrics.json", "training_curve.png", "README.md"):
        assert (out / name).is_file(), name
    assert not (out / "checkpoint").exists()
    config = json.loads((out / "config.json").read_text())
    assert config["architecture"] == "test_efficientnet" and config["input_size"] == 96
    assert 0.0 < config["threshold"] <= 1.0 and config["temperature"] > 0
    assert config["train"]["split"]["seed"] == 0 and config["train"]["split"]["val_patients"]
    assert len(json.loads((out / "metrics.json").read_text())["history"]) == 2
    prediction = Predictor.from_folder(out).predict(read_xray(EXAMPLES[0]))
    assert prediction.cam.shape == (96, 96) and 0 <= prediction.probability <= 1
