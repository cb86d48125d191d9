"""Grad-CAM: from the same pass as the probability, in range, hooks released."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from cxr.cam import DecisionTarget, overlay, target_layer_name
from cxr.inference import Member, Predictor
from cxr.model import ModelConfig, build_model


@pytest.fixture(params=["test_resnet", "test_convnext", "test_efficientnet", "test_vit"])
def predictor(request):
    torch.manual_seed(0)
    config = ModelConfig(request.param, input_size=96, threshold=0.4, temperature=1.5, logit_bias=0.2)
    return Predictor([Member(build_model(config).eval(), config)])


def test_cam_map_shape_range_and_content(predictor):
    prediction = predictor.predict(Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 200), np.uint8)))
    assert prediction.cam.shape == (96, 96)
    assert prediction.cam.min() >= 0.0 and prediction.cam.max() <= 1.0
    assert prediction.cam.std() > 0.05  # a map with structure, not a blank (e.g. a ViT layer without gradient)
    assert 0.0 <= prediction.probability <= 1.0


@pytest.mark.parametrize(("logit", "decision_logit", "explained"), [(2.0, 0.5, 2.0), (-1.0, 0.5, 1.0), (0.5, 0.5, 0.5)])
def test_cam_explains_the_decision_not_always_pneumonia(logit, decision_logit, explained):
    assert DecisionTarget(decision_logit)(torch.tensor([logit])).item() == explained


def test_probability_equals_a_plain_forward(predictor):
    image = Image.fromarray(np.random.default_rng(1).integers(0, 255, (128, 128), np.uint8))
    prediction = predictor.predict(image)
    with torch.no_grad():
        logit = predictor.model(predictor.preprocess(image)).item()
    expected = 1 / (1 + np.exp(-(logit / predictor.config.temperature + predictor.config.logit_bias)))
    assert prediction.probability == pytest.approx(expected, abs=1e-5)
    assert prediction.label == ("PNEUMONIA" if expected >= 0.4 else "NORMAL")


def test_hooks_are_released(predictor):
    layer = predictor.model.get_submodule(target_layer_name(predictor.model))
    predictor.predict(Image.new("L", (128, 128), 100))
    assert not layer._forward_hooks and not layer._backward_hooks


def test_overlay_keeps_aspect_ratio():
    result = overlay(Image.new("L", (1776, 1416)), np.random.default_rng(0).random((224, 224)))
    assert result.mode == "RGB"
    assert result.size == (1024, round(1416 * 1024 / 1776))
