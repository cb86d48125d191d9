"""Shared fixtures: the dataset (skip or fail when absent), a running app, tiny models."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("CXR_DATA", ROOT.parent / "shared" / "data" / "chest_xray"))
ORIGINALS = DATA.parent / "val_originals"
EXAMPLES = sorted((ROOT / "examples").glob("*.jpeg"))


def true_class(example: Path) -> str:
    """Bundled examples are named after their class: normal_*.jpeg, pneumonia_*.jpeg."""
    return example.name.split("_")[0].upper()


def _require(path: Path) -> Path:
    if path.is_dir():
        return path
    reason = f"dataset not found at {path} (set CXR_DATA)"
    if os.environ.get("CXR_REQUIRE_DATA") == "1":
        pytest.fail(reason + "; CXR_REQUIRE_DATA=1 forbids skipping")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return _require(DATA)


@pytest.fixture(scope="session")
def originals_dir() -> Path:
    return _require(ORIGINALS)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_app(
    env: dict[str, str] | None = None, timeout: float = 180, cwd: Path = ROOT
) -> tuple[subprocess.Popen, str, Path]:
    """Run ``python app.py`` (from ``cwd``) on a free port; returns the process, its URL and its log file."""
    import httpx

    port = free_port()
    log_file = Path(os.environ.get("TMPDIR", "/tmp")) / f"cxr-app-{port}.log"
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("CXR_MODEL", "HF_"))}
    full_env = {
        **inherited,
        "GRADIO_SERVER_PORT": str(port),
        "GRADIO_ANALYTICS_ENABLED": "False",
        "PYTHONPATH": str(ROOT),
        **(env or {}),
    }
    with open(log_file, "w") as log:
        process = subprocess.Popen([sys.executable, "app.py"], cwd=cwd, env=full_env, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"app exited with {process.returncode}:\n{log_file.read_text()}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return process, url, log_file
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    process.kill()
    raise RuntimeError(f"app did not answer within {timeout}s:\n{log_file.read_text()}")


@pytest.fixture(scope="session")
def app_url():
    process, url, _ = start_app()
    yield url
    process.terminate()
    process.wait(timeout=30)
