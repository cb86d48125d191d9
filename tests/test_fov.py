"""Field-of-view normalisation: the lung box, the crop, the map pasted back, and a classifier that uses it."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from cxr.errors import ModelLoadError
from cxr.fov import FieldOfView, field_of_view, lung_box, paste, pixel_box
from cxr.inference import Predictor
from cxr.io import read_xray
from cxr.model import load_model
from tests.conftest import EXAMPLES, ROOT
from tests.test_train import run_train


def _mask(top: int, left: int, bottom: int, right: int, side: int = 100) -> torch.Tensor:
    mask = torch.zeros(1, side, side)
    mask[0, top:bottom, left:right] = 1.0
    return mask


def test_lung_box_is_the_lungs_extent_widened_by_the_margin():
    top, left, height, width = lung_box(_mask(20, 10, 80, 90), margin=0.1, min_area=0.05)
    assert (top, left) == pytest.approx((0.20 - 0.06, 0.10 - 0.08), abs=0.011)
    assert (height, width) == pytest.approx((0.60 * 1.2, 0.80 * 1.2), abs=0.021)


def test_lung_box_ignores_a_stray_speck_and_stays_inside_the_image():
    mask = _mask(0, 0, 100, 100)
    box = lung_box(mask, margin=0.2, min_area=0.05)
    assert box == pytest.approx((0.0, 0.0, 1.0, 1.0))
    specks = _mask(40, 40, 60, 60)
    specks[0, 99, 99] = 1.0  # one pixel far away
    assert lung_box(specks, margin=0.0, min_area=0.01)[2] < 0.25


def test_too_little_lung_means_no_crop():
    assert lung_box(_mask(0, 0, 3, 3), margin=0.1, min_area=0.05) == (0.0, 0.0, 1.0, 1.0)


class FixedBox(FieldOfView):
    """A field of view whose box is known: the crop and paste arithmetic, without a segmenter."""

    def __init__(self, box: tuple[float, float, float, float]):
        self.box = box

    def boxes(self, images_u8, chunk: int = 128):
        return [self.box] * len(images_u8)


def test_crop_then_paste_puts_a_mark_back_where_it_was():
    image = torch.zeros(1, 1, 224, 224, dtype=torch.uint8)
    image[0, 0, 120:130, 60:70] = 255  # an off-centre mark inside the box
    box = (0.3, 0.1, 0.6, 0.7)
    crops, boxes = FixedBox(box).crop(image)
    assert crops.shape == image.shape
    back = paste(crops[0, 0].float().numpy() / 255, boxes[0])
    rows, cols = np.nonzero(back > 0.5)
    assert rows.mean() == pytest.approx(124.5, abs=1.5) and cols.mean() == pytest.approx(64.5, abs=1.5)


def test_lung_box_is_widened_to_the_minimum_side_inside_the_image():
    top, left, height, width = lung_box(_mask(40, 0, 60, 20), margin=0.0, min_area=0.01, min_side=0.5)
    assert height == pytest.approx(0.5) and width == pytest.approx(0.5)
    assert left == 0.0 and top == pytest.approx(0.25)


def test_the_map_of_a_cropping_model_is_zero_outside_its_box():
    """The default's network with a known crop: the Grad-CAM map lies in the box, in the whole frame."""
    from cxr.fov import attach
    from cxr.hub import DEFAULT_MODEL, WEIGHTS_DIR

    predictor = Predictor.from_folder(WEIGHTS_DIR / DEFAULT_MODEL)
    box = (0.2, 0.25, 0.6, 0.5)
    attach(predictor.model, FixedBox(box))
    image = read_xray(EXAMPLES[-1])
    prediction = predictor.predict(image)
    top, left, height, width = pixel_box(box, 224)
    inside = np.zeros((224, 224), dtype=bool)
    inside[top : top + height, left : left + width] = True
    assert prediction.cam.shape == (224, 224) and prediction.cam[inside].max() > 0
    assert np.abs(prediction.cam[~inside]).max() == 0.0
    # The batch path (no Grad-CAM) crops the same way: the same probability.
    assert predictor.screen([image])[0].probability == pytest.approx(prediction.probability, abs=1e-5)


def test_pasted_map_lies_inside_its_box_in_the_whole_frame():
    box = (0.25, 0.1, 0.5, 0.6)
    whole = paste(np.ones((224, 224), dtype=np.float32), box)
    top, left, height, width = pixel_box(box, 224)
    assert whole.shape == (224, 224)
    assert whole[top : top + height, left : left + width].min() == pytest.approx(1.0)
    assert whole.sum() == pytest.approx(height * width)


@pytest.fixture(scope="module")
def tiny_fov_model(data_dir, tmp_path_factory):
    """A tiny segmenter (cxr.cli.segmenter) and a tiny classifier trained with it (train.py --fov)."""
    tmp = tmp_path_factory.mktemp("fov")
    masks = data_dir.parent / "lung_masks"
    segmenter = tmp / "segmenter"
    command = [sys.executable, "-m", "cxr.cli.segmenter", "--data", str(data_dir), "--masks", str(masks)]
    command += ["--out", str(segmenter), "--encoder", "test_efficientnet", "--size", "64", "--epochs", "1"]
    command += ["--limit", "32", "--cache-dir", str(tmp / "cache")]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    out, _ = run_train(
        data_dir,
        tmp,
        "classifier",
        "--model",
        "test_efficientnet",
        "--limit",
        "32",
        "--epochs",
        "1",
        "--input-size",
        "96",
        "--fov",
        str(segmenter),
    )
    return out


@pytest.mark.slow
def test_classifier_folder_carries_its_segmenter(tiny_fov_model):
    model, config = load_model(tiny_fov_model)
    fov = field_of_view(model)
    assert fov is not None and config.fov["sha256"] == fov.sha256
    assert (tiny_fov_model / config.fov["folder"] / "model.safetensors").is_file()


@pytest.mark.slow
def test_a_trained_fov_model_answers_alike_on_both_paths(tiny_fov_model):
    predictor = Predictor.from_folder(tiny_fov_model)
    image = read_xray(EXAMPLES[0])
    prediction = predictor.predict(image)
    assert prediction.cam.shape == (96, 96)
    assert predictor.screen([image])[0].probability == pytest.approx(prediction.probability, abs=1e-5)


@pytest.mark.slow
def test_a_swapped_segmenter_is_refused(tiny_fov_model, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(tiny_fov_model, copy)
    weights = copy / "fov" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(ModelLoadError, match="sha256"):
        load_model(copy)


def test_field_of_view_is_not_part_of_the_state_dict(tmp_path):
    from cxr.fov import LungSegmenter, SegmenterConfig, attach
    from cxr.model import ModelConfig, build_model

    model = build_model(ModelConfig("test_efficientnet", input_size=64))
    keys = set(model.state_dict())
    attach(model, FieldOfView(LungSegmenter(SegmenterConfig(encoder="test_efficientnet", size=32))))
    assert set(model.state_dict()) == keys and field_of_view(model) is not None
