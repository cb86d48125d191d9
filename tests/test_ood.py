"""The out-of-distribution warning: real X-rays pass, images that are not X-rays are flagged."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from cxr.hub import DEFAULT_MODEL, WEIGHTS_DIR
from cxr.inference import Predictor
from cxr.io import read_xray
from cxr.model import ModelConfig, ModelLoadError
from cxr.ood import FALSE_ALARM, OOD_NAME
from cxr.stress import BANK
from tests.conftest import EXAMPLES


@pytest.fixture(scope="module")
def predictor():
    return Predictor.from_folder(WEIGHTS_DIR / DEFAULT_MODEL)


def not_xrays() -> dict[str, Image.Image]:
    rng = np.random.default_rng(0)
    return {
        "colour noise": Image.fromarray(rng.integers(0, 255, (400, 500, 3), np.uint8)),
        "gradient": Image.fromarray(np.tile(np.linspace(0, 255, 500), (400, 1)).astype(np.uint8)),
        "blank white": Image.new("L", (400, 400), 255),
        "blank black": Image.new("L", (400, 400), 0),
        "checkerboard": Image.fromarray(((np.indices((400, 400)).sum(0) // 25) % 2 * 255).astype(np.uint8)),
    }


def test_threshold_flags_at_most_the_stated_share_of_children():
    """The stated false-alarm rate: <= 2 % of the clean validation X-rays; the bank's share measured."""
    config = ModelConfig.from_json(WEIGHTS_DIR / DEFAULT_MODEL / "config.json")
    alarms = config.ood["false_alarm"]
    assert 0.01 <= alarms["clean"] <= FALSE_ALARM
    assert set(alarms["by_shift"]) == {shift.name for shift in BANK}


def test_the_threshold_is_the_lowest_that_keeps_the_stated_rate():
    """fit() on known distances: the threshold is the clean 98th percentile; the shifted share is measured."""
    import torch

    from cxr.ood import fit

    rng = np.random.default_rng(0)
    train = torch.from_numpy(rng.normal(size=(500, 4)))
    val = torch.from_numpy(rng.normal(size=(200, 4)))
    shifted = {"far": torch.from_numpy(rng.normal(size=(200, 4)) * 1.5)}
    scorer, stats = fit(train, val, shifted)
    near = scorer.distance(val)
    assert scorer.threshold == pytest.approx(np.quantile(near, 1 - FALSE_ALARM, method="higher"))
    assert stats["false_alarm"]["clean"] <= FALSE_ALARM < stats["false_alarm"]["bank_pooled"]


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_real_xrays_are_not_flagged(predictor, example):
    prediction = predictor.predict(read_xray(example))
    assert prediction.ood_distance is not None and not prediction.unusual


@pytest.mark.parametrize("name", list(not_xrays()))
def test_images_that_are_not_xrays_are_flagged(predictor, name):
    prediction = predictor.predict(not_xrays()[name])
    assert prediction.unusual, (name, prediction.ood_distance, predictor.members[0].ood.threshold)
    assert prediction.decision == "NOT_ASSESSED" and prediction.label in ("NORMAL", "PNEUMONIA")


def test_photos_and_documents_are_not_assessed(predictor, not_xrays):
    for name, path in not_xrays.items():
        prediction = predictor.predict(read_xray(path))
        assert prediction.record()["decision"] == "NOT_ASSESSED", (name, prediction.ood_distance)


def test_the_full_size_originals_always_get_a_decision(predictor, originals_dir):
    """The 16 full-size validation X-rays (other sizes and framing than the 224 px training copies)."""
    originals = sorted(p for p in originals_dir.rglob("*") if p.is_file())
    assert len(originals) == 16
    for path in originals:
        prediction = predictor.predict(read_xray(path))
        assert prediction.decision in ("NORMAL", "PNEUMONIA"), (path.name, prediction.ood_distance)


def test_a_changed_ood_file_is_refused(tmp_path):
    folder = tmp_path / DEFAULT_MODEL
    shutil.copytree(WEIGHTS_DIR / DEFAULT_MODEL, folder)
    (folder / OOD_NAME).write_bytes((folder / OOD_NAME).read_bytes()[:-8])
    with pytest.raises(ModelLoadError, match=OOD_NAME):
        Predictor.from_folder(folder)
