"""Broken weights stop the app at startup with one clear line; missing examples do not."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from cxr.hub import DEFAULT_MODEL, WEIGHTS_DIR
from cxr.model import CONFIG_NAME, WEIGHTS_NAME, ModelConfig
from tests.conftest import ROOT, free_port, start_app

pytestmark = pytest.mark.slow  # starts processes (the app, train.py or a command)


def start_with(weights_dir, cwd=ROOT) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CXR_", "HF_"))}
    env |= {"CXR_WEIGHTS_DIR": str(weights_dir), "GRADIO_SERVER_PORT": str(free_port()), "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, str(cwd / "app.py")], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def broken_copy(tmp_path, damage) -> tuple:
    folder = tmp_path / DEFAULT_MODEL
    shutil.copytree(WEIGHTS_DIR / DEFAULT_MODEL, folder)
    damage(folder)
    return tmp_path, folder


def truncate_weights(folder):
    data = (folder / WEIGHTS_NAME).read_bytes()
    (folder / WEIGHTS_NAME).write_bytes(data[: len(data) // 2])


def truncate_weights_without_checksum(folder):
    truncate_weights(folder)
    edit_config(folder, weights_sha256="")


def edit_config(folder, **changes):
    config = ModelConfig.from_json(folder / CONFIG_NAME)
    for name, value in changes.items():
        setattr(config, name, value)
    config.to_json(folder / CONFIG_NAME)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (truncate_weights, "sha256 does not match"),
        (truncate_weights_without_checksum, "not a readable safetensors file"),
        (lambda f: edit_config(f, architecture="resnet18"), "does not match 'resnet18'"),
        (lambda f: edit_config(f, architecture="no_such_backbone"), "unknown backbone 'no_such_backbone'"),
        (lambda f: (f / CONFIG_NAME).write_text("{not json"), "not a valid model config"),
        (lambda f: (f / WEIGHTS_NAME).unlink(), "file not found"),
    ],
    ids=["truncated", "truncated-no-checksum", "other-architecture", "unknown-backbone", "bad-json", "missing"],
)
def test_broken_weights_stop_the_start_with_a_clear_line(tmp_path, damage, message):
    weights_dir, folder = broken_copy(tmp_path, damage)
    result = start_with(weights_dir)
    assert result.returncode == 1
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("Cannot start:") and message in last_line and str(folder) in last_line, last_line
    assert "Traceback" not in result.stderr


def test_the_app_starts_without_examples(tmp_path):
    shutil.copy(ROOT / "app.py", tmp_path / "app.py")  # beside it: no examples/ folder
    process, url, log = start_app(cwd=tmp_path)
    try:
        from gradio_client import Client, handle_file

        label, _, _ = Client(url, verbose=False).predict(
            handle_file(str(ROOT / "examples" / "normal_NORMAL2-IM-1440-0001.jpeg")), api_name="/predict"
        )
        assert label["label"] == "NORMAL"
    finally:
        process.terminate()
        process.wait(timeout=30)
