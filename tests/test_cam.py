"""Grad-CAM: from the same pass as the probability, in range, hooks released."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from cxr.cam import DecisionTarget, decision_map, logit_and_activation_map, overlay, target_layer_name
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
    pool = getattr(predictor.model, "global_pool", None)  # the class activation map's hook sits there
    assert not isinstance(pool, torch.nn.Module) or not pool._forward_pre_hooks


@pytest.mark.parametrize(
    ("architecture", "final_activation"), [("test_efficientnet", "bn2"), ("test_resnet", "layer4")]
)
@pytest.mark.parametrize("pneumonia", [True, False])
def test_one_pass_map_is_grad_cam_at_the_final_activation(architecture, final_activation, pneumonia):
    """The map without a backward equals pytorch-grad-cam's Grad-CAM at the layer the head pools, for either side."""
    from pytorch_grad_cam import GradCAM

    torch.manual_seed(0)
    model = build_model(ModelConfig(architecture, input_size=96)).eval()
    batch = torch.rand(1, 1, 96, 96)
    logit, activation = logit_and_activation_map(model, batch)
    one_pass = decision_map(activation, pneumonia, 96)
    with GradCAM(model=model, target_layers=[model.get_submodule(final_activation)]) as cam:
        expected = cam(input_tensor=batch, targets=[DecisionTarget(-math.inf if pneumonia else math.inf)])[0]
    assert logit == pytest.approx(model(batch).item(), abs=1e-5)
    assert one_pass.shape == (96, 96) and one_pass.min() >= 0.0 and one_pass.max() <= 1.0
    # Float rounding only, magnified by the min-max scaling of a random network's nearly flat map.
    np.testing.assert_allclose(one_pass, expected, atol=2e-3)


def test_predictor_answers_cnns_without_a_backward(monkeypatch):
    """No gradient is computed for an efficientnet's answer: the map comes from the forward pass."""
    torch.manual_seed(0)
    config = ModelConfig("test_efficientnet", input_size=96, threshold=0.5)
    predictor = Predictor([Member(build_model(config).eval(), config)])
    backwards = []
    monkeypatch.setattr(torch.Tensor, "backward", lambda *a, **k: backwards.append(a))
    prediction = predictor.predict(Image.fromarray(np.random.default_rng(2).integers(0, 255, (120, 100), np.uint8)))
    assert not backwards and prediction.cam.shape == (96, 96) and prediction.cam.max() > 0.9


def test_overlay_keeps_aspect_ratio():
    result = overlay(Image.new("L", (1776, 1416)), np.random.default_rng(0).random((224, 224)))
    assert result.mode == "RGB"
    assert result.size == (1024, round(1416 * 1024 / 1776))


@pytest.mark.parametrize("brightness", [1.0, 0.3], ids=["as-is", "dim"])
def test_overlay_is_grad_cams_blend(brightness):
    """The uint8 blend gives grad-cam's show_cam_on_image colours (rounding apart) on a real X-ray,
    also on a dim one, which show_cam_on_image scales up to full brightness."""
    import cv2
    from pytorch_grad_cam.utils.image import show_cam_on_image

    from tests.conftest import EXAMPLES

    with Image.open(EXAMPLES[0]) as original:
        image = original.convert("L").point(lambda v: round(v * brightness))
    cam_map = cv2.resize(np.random.default_rng(1).random((7, 7)).astype(np.float32), (224, 224))
    result = np.asarray(overlay(image, cam_map), dtype=int)
    base = np.asarray(image.convert("RGB").resize(result.shape[1::-1], Image.Resampling.BILINEAR), np.float32) / 255
    heat = cv2.resize(cam_map, result.shape[1::-1], interpolation=cv2.INTER_LINEAR)
    expected = show_cam_on_image(base, heat, use_rgb=True, image_weight=0.6).astype(int)
    assert np.abs(result - expected).max() <= 3
    assert np.abs(result - expected).mean() < 0.8


def test_an_error_inside_grad_cam_is_raised_not_swallowed():
    """pytorch-grad-cam's ``__exit__`` swallows an IndexError (the map would then be unbound)."""
    from cxr.cam import logit_and_cam

    torch.manual_seed(0)
    model = build_model(ModelConfig("test_resnet", input_size=96)).eval()

    def fail(*_):
        raise IndexError("raised inside the forward pass")

    model.get_submodule(target_layer_name(model)).register_forward_hook(fail)
    with pytest.raises(RuntimeError, match="raised inside the forward pass"):
        logit_and_cam(model, torch.zeros(1, 1, 96, 96), 0.0)
