"""`cxr-predict --engine ray`: Ray Data's actor pool gives the rows the single-process path gives, on a
local Ray (2 CPUs, no dashboard) that the test starts and stops."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cxr.hub import DEFAULT_MODEL, WEIGHTS_DIR
from cxr.inference import Predictor
from cxr.predict import FIELDS, predict_files, read_for_adaptation

pytestmark = pytest.mark.slow  # starts a Ray cluster

ray = pytest.importorskip("ray", reason="the ray extra: pip install .[ray]")
WEIGHTS = WEIGHTS_DIR / DEFAULT_MODEL


@pytest.fixture(scope="module")
def local_ray():
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a throwaway local cluster needs no token
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=300 * 2**20, logging_level="WARNING")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def forty_xrays(data_dir) -> list[Path]:
    """20 normal and 20 pneumonia X-rays of the training folder (the Kaggle val folder holds 16)."""
    files = [p for kind in ("NORMAL", "PNEUMONIA") for p in sorted((data_dir / "train" / kind).glob("*.jpeg"))[:20]]
    assert len(files) == 40
    return files


def assert_same_rows(local: list[dict], distributed: list[dict]) -> None:
    assert [row["file"] for row in distributed] == [str(row["file"]) for row in local]
    for a, b in zip(local, distributed, strict=True):
        assert set(b) == set(FIELDS)
        assert b["decision"] == a.get("decision", "") and b["error"] == a["error"], (a, b)
        if a.get("probability", ""):
            assert float(b["probability"]) == pytest.approx(float(a["probability"]), abs=1e-5)


def test_both_engines_give_the_same_rows(local_ray, forty_xrays, tmp_path):
    from cxr.ray_engine import ray_predict

    broken = tmp_path / "broken.jpeg"
    broken.write_bytes(b"not an image")
    files = [*forty_xrays, broken]
    local = list(predict_files(Predictor.from_folder(WEIGHTS), files, progress_bar=False))
    distributed = list(ray_predict(WEIGHTS, files, workers=2, batch_size=16))
    assert_same_rows(local, distributed)
    assert distributed[-1]["error"].startswith("This file is not an image") and distributed[-1]["probability"] == ""
    assert {"NORMAL", "PNEUMONIA"} <= {row["decision"] for row in distributed[:40]}


def test_site_adaptation_composes_with_the_ray_engine(local_ray, forty_xrays):
    """The adapted statistics from the first pass reach every actor: the rows equal the local adapted run."""
    from cxr.ray_engine import ray_predict

    predictor = Predictor.from_folder(WEIGHTS)
    plain = list(predict_files(predictor, forty_xrays, progress_bar=False))
    with predictor.adapted_to(read_for_adaptation(predictor, forty_xrays)) as adaptations:
        assert all(a.adapted for a in adaptations), [a.message() for a in adaptations]
        local = list(predict_files(predictor, forty_xrays, progress_bar=False))
    distributed = list(ray_predict(WEIGHTS, forty_xrays, workers=2, batch_size=16, adapt=True))
    assert_same_rows(local, distributed)
    assert any(a["probability"] != b["probability"] for a, b in zip(plain, local, strict=True))  # it did adapt
