"""Field-of-view normalisation: the lung box, the crop, the map pasted back, and a classifier that uses it."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from cxr.errors import ModelLoadError
from cxr.fov import WHOLE, FieldOfView, SegmenterConfig, field_of_view, framed, lung_box, paste, pixel_box
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


class PaintedLungs(torch.nn.Module):
    """A segmenter whose lungs are a known square (rows and columns as shares of the side): the dimming
    arithmetic without a trained segmenter."""

    def __init__(self, config: SegmenterConfig, start: float, stop: float):
        super().__init__()
        self.config, self.start, self.stop = config, start, stop

    def lung_probability(self, images_u8):
        side = self.config.size
        probability = torch.zeros(len(images_u8), 1, side, side)
        low, high = round(self.start * side), round(self.stop * side)
        probability[..., low:high, low:high] = 1.0
        return probability


def dimmer(start: float, stop: float, **settings) -> FieldOfView:
    return FieldOfView(PaintedLungs(SegmenterConfig(mode="dim", size=100, **settings), start, stop))


def test_dim_keeps_the_lungs_and_darkens_the_rest_to_its_share():
    image = torch.full((2, 1, 200, 200), 200, dtype=torch.uint8)
    frames, boxes = dimmer(0.25, 0.75, outside=0.2, dilate=0.0).frame(image)
    assert frames.dtype == torch.uint8 and frames.shape == image.shape and boxes == [WHOLE, WHOLE]
    assert (frames[:, :, 60:140, 60:140] == 200).all()  # the lungs, untouched
    assert (frames[:, :, :40] == 40).all() and (frames[:, :, :, 170:] == 40).all()  # far off them: 0.2 x 200


def test_dim_spares_a_margin_around_the_lungs_and_works_on_augmented_floats():
    image = torch.full((1, 1, 200, 200), 0.5)
    frames = dimmer(0.25, 0.75, outside=0.0, dilate=0.05).dim(image)  # 10 px of 200
    assert frames.dtype == torch.float32
    assert frames[0, 0, 100, 42] == pytest.approx(0.5) and frames[0, 0, 100, 20] == 0.0


def test_an_image_with_too_little_lung_is_not_dimmed():
    image = torch.full((1, 1, 100, 100), 90, dtype=torch.uint8)
    assert torch.equal(dimmer(0.5, 0.52, min_lung_area=0.05).frame(image)[0], image)


def test_an_unknown_mode_is_refused(tmp_path):
    config = tmp_path / "config.json"
    SegmenterConfig(mode="blur").to_json(config)
    with pytest.raises(ModelLoadError, match="unknown mode 'blur'"):
        SegmenterConfig.from_json(config)


class FixedBox(FieldOfView):
    """A field of view whose box is known: the crop and paste arithmetic, without a segmenter."""

    def __init__(self, box: tuple[float, float, float, float]):
        self.box, self.config = box, SegmenterConfig()  # mode "crop"

    def boxes(self, images_u8):
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
def tiny_segmenter(data_dir, tmp_path_factory):
    """A tiny lung segmenter trained by cxr.cli.segmenter on a few real masks."""
    tmp = tmp_path_factory.mktemp("segmenter")
    masks = data_dir.parent / "lung_masks"
    segmenter = tmp / "segmenter"
    command = [sys.executable, "-m", "cxr.cli.segmenter", "--data", str(data_dir), "--masks", str(masks)]
    command += ["--out", str(segmenter), "--encoder", "test_efficientnet", "--size", "64", "--epochs", "1"]
    command += ["--limit", "32", "--cache-dir", str(tmp / "cache")]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return segmenter


def train_with_fov(data_dir, tmp_path_factory, segmenter, *flags: str):
    tmp = tmp_path_factory.mktemp("fov")
    tiny = ("--model", "test_efficientnet", "--limit", "32", "--epochs", "1", "--input-size", "96")
    return run_train(data_dir, tmp, "classifier", *tiny, "--fov", str(segmenter), *flags)[0]


@pytest.fixture(scope="module")
def tiny_fov_model(data_dir, tmp_path_factory, tiny_segmenter):
    """A tiny classifier trained with the segmenter's crop (train.py --fov)."""
    return train_with_fov(data_dir, tmp_path_factory, tiny_segmenter)


@pytest.fixture(scope="module")
def tiny_dim_model(data_dir, tmp_path_factory, tiny_segmenter):
    """A tiny classifier trained on lung-masked input (train.py --fov --fov-mode dim)."""
    return train_with_fov(data_dir, tmp_path_factory, tiny_segmenter, "--fov-mode", "dim")


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
def test_a_lung_masked_input_model_dims_on_every_path_and_maps_the_whole_frame(tiny_dim_model):
    """train.py --fov-mode dim: the folder's segmenter dims (not crops), single and batch answers agree,
    and the map covers the whole image (nothing pasted into a box)."""
    model, _ = load_model(tiny_dim_model)
    assert field_of_view(model).config.mode == "dim"
    card = (tiny_dim_model / "README.md").read_text()
    assert "Lung-masked input" in card and "darkened to 20%" in card
    predictor = Predictor.from_folder(tiny_dim_model)
    image = read_xray(EXAMPLES[0])
    prediction = predictor.predict(image)
    assert prediction.cam.shape == (96, 96)
    assert predictor.screen([image])[0].probability == pytest.approx(prediction.probability, abs=1e-5)
    image_u8 = predictor.preprocess.tensor(image)[None]
    fov = field_of_view(model)
    assert torch.equal(framed(model, image_u8), fov.dim(image_u8))
    fov.config.min_lung_area = 0.0  # a one-epoch segmenter finds little lung: dim around whatever it finds
    dimmed = framed(model, image_u8)
    assert dimmed.shape == image_u8.shape and (dimmed <= image_u8).all() and not torch.equal(dimmed, image_u8)


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
    from cxr.fov import LungSegmenter, attach
    from cxr.model import ModelConfig, build_model

    model = build_model(ModelConfig("test_efficientnet", input_size=64))
    keys = set(model.state_dict())
    attach(model, FieldOfView(LungSegmenter(SegmenterConfig(encoder="test_efficientnet", size=32))))
    assert set(model.state_dict()) == keys and field_of_view(model) is not None


@pytest.mark.slow
@pytest.mark.parametrize("fixture", ["tiny_fov_model", "tiny_dim_model"])
def test_the_field_of_view_sheet_is_drawn_for_both_modes(fixture, request, data_dir, tmp_path):
    import shutil

    from PIL import Image

    from cxr.data import list_samples, split_by_patient
    from cxr.model import ModelConfig

    # A tiny model recorded the validation patients of its --limit run; the sheet reads the whole split.
    weights, out = tmp_path / "weights", tmp_path / "sheet.png"
    shutil.copytree(request.getfixturevalue(fixture), weights)
    config = ModelConfig.from_json(weights / "config.json")
    _, val = split_by_patient(list_samples(data_dir / "train"), config.train["split"]["val_fraction"], 0)
    config.train["split"]["val_patients"] = sorted({s.patient for s in val})
    config.to_json(weights / "config.json")
    command = [sys.executable, "-m", "cxr.cli.fov", "--weights", str(weights), "--out", str(out)]
    command += ["--data", str(data_dir), "--cache-dir", str(tmp_path / "cache"), "--bank-images", "2"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert Image.open(out).size[0] > 500
