"""train.py end to end on a few dozen real images with a tiny timm model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cxr.inference import Predictor
from cxr.io import read_xray
from cxr.model import ModelConfig
from tests.conftest import EXAMPLES, ROOT

pytestmark = pytest.mark.slow  # starts processes (the app, train.py or a command)


def run_train(
    data_dir: Path, tmp_path: Path, name: str, *flags: str, launcher: tuple[str, ...] = (sys.executable,)
) -> tuple[Path, subprocess.CompletedProcess]:
    """Run train.py on a few real images; returns its output folder and the finished process."""
    out = tmp_path / name
    command = [
        *launcher,
        "train.py",
        "--data",
        str(data_dir),
        "--out",
        str(out),
        "--cache-dir",
        str(tmp_path / "cache"),
        "--batch-size",
        "16",
        *flags,
    ]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result


TINY_RUN = ("--model", "test_efficientnet", "--limit", "48", "--epochs", "2")  # a tiny timm model, 2 epochs


def test_train_smoke_run(data_dir, tmp_path):
    out, _ = run_train(
        data_dir,
        tmp_path,
        "run",
        *TINY_RUN,
        "--input-size",
        "96",
    )
    for name in (
        "model.safetensors",
        "config.json",
        "metrics.json",
        "training_curve.png",
        "README.md",
        "ood.safetensors",
    ):
        assert (out / name).is_file(), name
    assert not (tmp_path / "cache" / "checkpoints" / "run").exists()  # removed once the run is saved
    assert json.loads((out / "config.json").read_text())["pretrained_cfg"]["input_size"] == [1, 96, 96]
    config = ModelConfig.from_json(out / "config.json")
    assert config.architecture == "test_efficientnet" and config.input_size == 96
    assert 0.0 < config.threshold <= 1.0 and config.temperature > 0
    assert config.train["split"]["seed"] == 0 and config.train["split"]["val_patients"]
    assert len(json.loads((out / "metrics.json").read_text())["history"]) == 2
    prediction = Predictor.from_folder(out).predict(read_xray(EXAMPLES[0]))
    assert prediction.cam.shape == (96, 96) and 0 <= prediction.probability <= 1
    assert prediction.ood_distance is not None and config.ood["false_alarm"]["clean"] <= 0.02


def test_shipped_recipe_flags_run(data_dir, tmp_path):
    """The shipped recipe's switches (ImageNet start, frozen stem), the other balancing and mixing options."""
    out, result = run_train(
        data_dir,
        tmp_path,
        "lite0",
        "--model",
        "efficientnet_lite0",
        "--pretrained",
        "--freeze-until",
        "blocks.2",
        "--sampler",
        "balanced",
        "--pos-weight",
        "none",
        "--hflip",
        "--mixup",
        "0.2",
        "--cutmix",
        "1.0",
        "--label-smoothing",
        "0.1",
        "--limit",
        "32",
        "--epochs",
        "1",
        "--input-size",
        "64",
    )
    assert "Loaded ImageNet EfficientNet-Lite0 weights" in result.stderr
    config = ModelConfig.from_json(out / "config.json")
    assert config.train["loss"] == "bce+mixup0.2+cutmix1+smoothing0.1" and config.train["sampler"] == "balanced"
    assert config.ood["layer"] == "blocks.1"  # the check pools the last stage left at its ImageNet weights


def test_train_runs_unchanged_under_torchrun(data_dir, tmp_path):
    """DDP on CPU: gloo backend, 2 processes, a few steps, one process saves."""
    torchrun = (sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2")
    out, result = run_train(
        data_dir,
        tmp_path,
        "ddp",
        *TINY_RUN,
        "--batch-size",
        "8",
        "--input-size",
        "64",
        "--sampler",
        "balanced",
        launcher=torchrun,
    )
    config = ModelConfig.from_json(out / "config.json")
    assert config.train["processes"] == 2 and config.train["epochs_run"] == 2
    assert "[rank 0] epoch 2" in result.stderr and "[rank 1] epoch" not in result.stderr
    assert Predictor.from_folder(out).predict(read_xray(EXAMPLES[0])).cam.shape == (64, 64)


def test_a_run_killed_mid_epoch_resumes_to_the_same_weights(data_dir, tmp_path):
    """Kill train.py inside epoch 2, resume it: the finished run equals one never stopped, and the
    killed run left no weights folder in place (the folder itself is staged: tests/test_folder.py)."""
    import os
    import signal
    import time

    flags = ("--model", "test_efficientnet", "--limit", "320", "--epochs", "3", "--input-size", "64")
    flags += ("--calibration", "clean", "--threads", "1")
    straight, _ = run_train(data_dir, tmp_path, "straight", *flags)

    out, cache = tmp_path / "stopped", tmp_path / "cache"
    command = [sys.executable, "train.py", "--data", str(data_dir), "--out", str(out), "--cache-dir", str(cache)]
    command += ["--batch-size", "16", *flags]
    log = tmp_path / "stopped.log"
    with open(log, "w") as handle:
        process = subprocess.Popen(command, cwd=ROOT, stdout=handle, stderr=handle)
    checkpoint = cache / "checkpoints" / "stopped" / "last.pt"
    deadline = time.time() + 300
    while not (checkpoint.exists() and "epoch 2:" in log.read_text()) and process.poll() is None:
        assert time.time() < deadline, log.read_text()[-2000:]
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, log.read_text()[-2000:]
    assert not out.exists() and not any(tmp_path.glob("stopped.partial/*"))  # nothing half-written in place

    changed = subprocess.run(command + ["--resume", "--lr", "0.5"], cwd=ROOT, capture_output=True, text=True)
    assert changed.returncode == 2 and "arguments differ" in changed.stderr and "'lr': (0.001, 0.5)" in changed.stderr

    _, resumed = run_train(data_dir, tmp_path, "stopped", *flags, "--resume")
    assert "after epoch 1" in resumed.stderr and "epoch 1 loss" not in resumed.stderr
    # Every tensor equal to the bit (the file's bytes are not: safetensors writes its metadata map in any order).
    import torch
    from safetensors import safe_open

    with safe_open(out / "model.safetensors", "pt") as a, safe_open(straight / "model.safetensors", "pt") as b:
        names = sorted(a.keys())
        assert a.metadata() == b.metadata() and names == sorted(b.keys())
        assert all(torch.equal(a.get_tensor(name), b.get_tensor(name)) for name in names)
    recipes = [ModelConfig.from_json(folder / "config.json").train["args"] for folder in (out, straight)]
    assert recipes[0] == recipes[1] | {"out": str(out)}  # the resumed run records the same recipe
    history = [json.loads((folder / "metrics.json").read_text())["history"] for folder in (out, straight)]
    assert [h["epoch"] for h in history[0]] == [1, 2, 3]
    assert [h["loss"] for h in history[0]] == [h["loss"] for h in history[1]]
    assert not checkpoint.exists()  # removed once the run is saved


def test_resume_without_a_checkpoint_is_one_line(data_dir, tmp_path):
    base = [sys.executable, "train.py", "--data", str(data_dir), "--out", str(tmp_path / "r")]
    base += ["--cache-dir", str(tmp_path / "cache"), "--model", "test_efficientnet", "--resume"]
    missing = subprocess.run(base, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert missing.returncode == 2 and "no checkpoint" in missing.stderr and "Traceback" not in missing.stderr


def test_lung_penalty_run_records_the_evidence_off_the_lungs(data_dir, tmp_path):
    """--lung-penalty: masks found for the training images that have one, the share logged each epoch."""
    masks = str(data_dir.parent / "lung_masks")
    flags = ("--model", "test_efficientnet", "--limit", "160", "--epochs", "2", "--input-size", "96")
    lungs = ("--lung-penalty", "1", "--lung-masks", masks)
    out, result = run_train(data_dir, tmp_path, "lungs", *flags, "--augment", "shift", *lungs, "--ood-draws", "0")
    assert "lung masks for" in result.stderr
    config = ModelConfig.from_json(out / "config.json")
    assert config.ood["fit_on"] == "160 training images"  # --ood-draws 0: one fit, no augmented draws
    assert config.train["loss"] == "bce+pos_weight+lung_penalty1"
    history = json.loads((out / "metrics.json").read_text())["history"]
    assert all(0.0 <= epoch["off_lungs"] <= 1.0 for epoch in history)


def test_lung_penalty_needs_the_shift_augmentation(data_dir, tmp_path):
    command = [sys.executable, "train.py", "--data", str(data_dir), "--out", str(tmp_path / "r"), "--limit", "32"]
    command += ["--cache-dir", str(tmp_path / "cache"), "--model", "test_efficientnet", "--lung-penalty", "1"]
    refused = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2 and "--lung-penalty" in refused.stderr and "Traceback" not in refused.stderr
