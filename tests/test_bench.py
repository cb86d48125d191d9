"""`python -m cxr.cli.bench --json`: every figure README quotes is produced, per model and through the app.

Only the shape and sanity of the figures are checked here; the speed targets live in the benchmark
and README, not in a timed test.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from cxr.hub import bundled_models
from tests.conftest import ROOT

pytestmark = pytest.mark.slow  # starts processes (the app, train.py or a command)


def test_bench_json_has_every_figure():
    result = subprocess.run(
        [sys.executable, "-m", "cxr.cli.bench", "--json", "--runs", "3", "--batch-size", "4", "--launches", "2"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    for key in (
        "forward_ms_p50",
        "predict_cam_ms_p50",
        "predict_no_map_ms_p50",
        "client_ms_p50",
        "cold_start_s",
        "batch_images_per_s",
    ):
        assert figures[key] > 0, key
    assert figures["forward_ms_p95"] >= figures["forward_ms_p50"]
    assert figures["cold_start_s"] > figures["client_ms_p50"] / 1000  # a launch outlasts one call
    assert figures["cold_server_up_s"] + figures["cold_first_call_s"] <= figures["cold_start_s"] + 0.02
    assert len(figures["cold_start_each_s"]) == figures["cold_launches"] == 2
    assert figures["cold_start_max_s"] >= figures["cold_start_s"] >= min(figures["cold_start_each_s"])
    assert figures["cold_client_first_call_s"] > 0
    # /v1 answers first; the page (gradio_client, MCP) comes up after it, once Gradio is imported
    assert figures["cold_page_up_max_s"] >= figures["cold_page_up_s"] > figures["cold_server_up_s"]
    assert figures["cold_imports_s"] >= figures["cold_imports_api_s"] > 0 and figures["cold_imports_gradio_s"] > 0
    _round_trip_breakdown(figures)
    for door in ("http", "http_cam", "gradio_client", "mcp"):  # every door, alone and with 4 callers
        for key in (f"door_{door}_ms", f"door_{door}_x4_ms"):
            assert figures[f"{key}_p95"] >= figures[f"{key}_p50"] > 0, key
    assert set(figures["models"]) == set(bundled_models())
    assert figures["default"] == next(iter(figures["models"]))
    for model in figures["models"].values():
        assert model["parameters"] > 100_000 and model["predict_cam_ms_p50"] > 0 and model["batch_images_per_s"] > 0
        assert model["predict_cam_over_forward_p50"] > 0


def _round_trip_breakdown(figures: dict) -> None:
    """One gradio_client call, as README's Speed section breaks it down: four requests (upload, join the
    queue, its event stream, the overlay's download), each on a new httpx client; and the same call made
    directly over one connection."""
    for key in ("client_requests_per_call", "client_new_httpx_clients_per_call", "overlay_bytes"):
        assert isinstance(figures[key], int) and figures[key] > 0, key
    assert figures["client_requests_per_call"] == 4
    for step in ("new_httpx_client", "upload", "join", "result_wait", "download"):
        assert figures[f"client_{step}_ms"] > 0, step
    assert figures["app_http_ms_p95"] >= figures["app_http_ms_p50"] > 0
