"""Start the real app (`python app.py`) on a free loopback port, for tests, benchmarks and load runs."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the repository: app.py, examples/


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch_app(env: dict[str, str] | None = None, cwd: Path = ROOT) -> tuple[subprocess.Popen, str, Path]:
    """Run ``python app.py`` (from ``cwd``) on a free port, without waiting; returns the process, its
    URL and its log file. The caller's Hub and model settings are not inherited: the app gets only
    what ``env`` says."""
    port = free_port()
    log_file = Path(tempfile.gettempdir()) / f"cxr-app-{port}.log"
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
    return process, f"http://127.0.0.1:{port}/", log_file


def wait_healthy(process: subprocess.Popen, url: str, log_file: Path, page: bool = True, timeout: float = 180) -> None:
    """Wait until ``/v1/health`` says the default model is loaded and warm (/v1 answers) and, with
    ``page``, that the page, gradio_client and MCP answer too. RuntimeError if the app exits or is late."""
    import httpx

    deadline = time.time() + timeout
    with httpx.Client(timeout=2) as http:  # one client: a new one costs ~30 ms (its TLS context), a cold start's noise
        while time.time() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"app exited with {process.returncode}:\n{log_file.read_text()}")
            with contextlib.suppress(httpx.HTTPError):
                health = http.get(url + "v1/health")
                if health.status_code == 200 and (health.json()["page"] or not page):
                    return
            time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"app did not answer within {timeout}s:\n{log_file.read_text()}")


def start_app(
    env: dict[str, str] | None = None, timeout: float = 180, cwd: Path = ROOT
) -> tuple[subprocess.Popen, str, Path]:
    """Run ``python app.py`` (from ``cwd``) on a free port and wait until all of it answers (the
    default model warm, the page mounted); returns the process, its URL and its log file."""
    process, url, log_file = launch_app(env, cwd)
    wait_healthy(process, url, log_file, page=True, timeout=timeout)
    return process, url, log_file


@contextlib.contextmanager
def running_app(env: dict[str, str] | None = None) -> Iterator[str]:
    """The app's URL while it runs; stopped on exit."""
    process, url, _ = start_app(env)
    try:
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
