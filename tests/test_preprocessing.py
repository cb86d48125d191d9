"""One preprocessing path for every upload: any size or mode → what the model saw in training."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from cxr.data import Preprocessing, resize_to_input
from cxr.io import read_xray, to_grayscale
from cxr.model import ModelConfig, build_model, preprocessing_for

PRE = Preprocessing(input_size=224, mean=0.5, std=0.25, in_chans=1)


def gradient(width: int, height: int) -> np.ndarray:
    return np.tile(np.linspace(0, 255, width, dtype=np.float32), (height, 1))


@pytest.mark.parametrize("size", [(64, 64), (224, 224), (1776, 1416), (600, 2000), (3000, 97)])
@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "LA", "P", "I;16", "I", "F", "1", "CMYK"])
def test_any_size_and_mode_gives_model_input(size, mode):
    image = Image.fromarray(gradient(*size).astype(np.uint8), "L").convert(mode)
    batch = PRE(image)
    assert batch.shape == (1, 1, 224, 224)
    assert batch.dtype == torch.float32
    assert torch.isfinite(batch).all()
    assert batch.min() >= -2.0 - 1e-6 and batch.max() <= 2.0 + 1e-6  # (0 - 0.5)/0.25 .. (1 - 0.5)/0.25


def test_sixteen_bit_is_scaled_not_clipped():
    data = (gradient(256, 256) / 255 * 4095).astype(np.uint16)  # 12-bit data in a 16-bit PNG
    buffer = io.BytesIO()
    Image.fromarray(data).save(buffer, format="PNG")
    gray = np.asarray(to_grayscale(Image.open(buffer)))
    assert gray.min() == 0 and gray.max() == 255
    assert len(np.unique(gray)) > 200  # a ramp, not a clipped plateau


def test_rgba_transparent_background_becomes_black():
    image = Image.new("RGBA", (100, 100), (255, 255, 255, 0))
    assert np.asarray(to_grayscale(image)).max() == 0


def test_exif_rotation_is_applied():
    tall = Image.fromarray(gradient(100, 300).astype(np.uint8), "L")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    buffer = io.BytesIO()
    tall.save(buffer, format="JPEG", exif=exif)
    assert to_grayscale(Image.open(buffer)).size == (300, 100)


def test_replicated_channels_for_three_channel_models():
    batch = Preprocessing(224, 0.5, 0.5, in_chans=3)(Image.new("L", (300, 200), 128))
    assert batch.shape == (1, 3, 224, 224)
    assert torch.equal(batch[:, 0], batch[:, 2])


def test_preprocessing_is_derived_from_the_model_config():
    model = build_model(ModelConfig("test_resnet", in_chans=3, input_size=160, mean=0.4, std=0.3))
    assert preprocessing_for(model) == Preprocessing(160, 0.4, 0.3, 3)


def test_training_images_pass_unchanged(data_dir):
    """A 224 px training image goes through the same resize the training cache used, untouched."""
    path = next((data_dir / "train" / "NORMAL").glob("*.jpeg"))
    cached = resize_to_input(read_xray(path), 224)
    assert torch.equal(cached, torch.from_numpy(np.array(Image.open(path).convert("L"))).unsqueeze(0))
