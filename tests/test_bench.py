"""`python -m cxr.bench --json`: every figure README quotes is produced, per model and through the app.

Only the shape and sanity of the figures are checked here; the speed targets live in the benchmark
and README, not in a timed test.
"""

from __future__ import annotations

import json
import subprocess
import sys

from cxr.hub import bundled_models
from tests.conftest import ROOT


def test_bench_json_has_every_figure():
    result = subprocess.run(
        [sys.executable, "-m", "cxr.bench", "--json", "--runs", "3", "--batch-size", "4"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    for key in ("forward_ms_p50", "predict_cam_ms_p50", "client_ms_p50", "cold_start_s", "batch_images_per_s"):
        assert figures[key] > 0, key
    assert figures["forward_ms_p95"] >= figures["forward_ms_p50"]
    assert figures["cold_start_s"] > figures["client_ms_p50"] / 1000  # a launch outlasts one call
    assert set(figures["models"]) == set(bundled_models())
    assert figures["default"] == next(iter(figures["models"]))
    for model in figures["models"].values():
        assert model["parameters"] > 100_000 and model["predict_cam_ms_p50"] > 0 and model["batch_images_per_s"] > 0
