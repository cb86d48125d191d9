"""Weights travel with their config; loading is strict and checked."""

from __future__ import annotations

import json

import pytest
import torch

from cxr.model import CONFIG_NAME, WEIGHTS_NAME, ModelConfig, ModelLoadError, build_model, load_model, save_model


@pytest.fixture
def tiny(tmp_path):
    torch.manual_seed(0)
    config = ModelConfig("test_resnet", input_size=64, threshold=0.3, temperature=1.7)
    # channels_last as load_model returns it: same kernels, so identical logits are a fair demand
    model = build_model(config).eval().to(memory_format=torch.channels_last)
    with torch.no_grad():  # non-trivial BN statistics, so the round trip covers buffers too
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    return model, config, torch.randn(3, 1, 64, 64)


def test_float32_round_trip_gives_identical_logits(tiny, tmp_path):
    model, config, x = tiny
    save_model(model, config, tmp_path, dtype=torch.float32)
    loaded, loaded_config = load_model(tmp_path)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert loaded_config.threshold == 0.3 and loaded_config.temperature == 1.7
    assert loaded_config.weights_sha256 and len(loaded_config.weights_sha256) == 64


def test_float16_storage_keeps_logits(tiny, tmp_path):
    model, config, x = tiny
    save_model(model, config, tmp_path)
    loaded, _ = load_model(tmp_path)
    reloaded, _ = load_model(tmp_path)
    with torch.no_grad():
        assert torch.equal(loaded(x), reloaded(x))
        assert torch.allclose(model(x), loaded(x), atol=2e-2, rtol=1e-2)


def test_config_is_plain_json_with_the_recipe(tiny, tmp_path):
    model, config, _ = tiny
    config.train = {"split": {"seed": 0}}
    save_model(model, config, tmp_path)
    data = json.loads((tmp_path / CONFIG_NAME).read_text())
    assert data["architecture"] == "test_resnet" and data["labels"] == ["NORMAL", "PNEUMONIA"]
    assert data["train"]["split"]["seed"] == 0


def test_changed_weights_fail_the_checksum(tiny, tmp_path):
    model, config, _ = tiny
    save_model(model, config, tmp_path)
    weights = tmp_path / WEIGHTS_NAME
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match="sha256"):
        load_model(tmp_path)


def test_config_of_another_backbone_fails_strict_load(tiny, tmp_path):
    model, config, _ = tiny
    save_model(model, config, tmp_path)
    data = json.loads((tmp_path / CONFIG_NAME).read_text())
    data["architecture"] = "test_efficientnet"
    (tmp_path / CONFIG_NAME).write_text(json.dumps(data))
    with pytest.raises(ModelLoadError, match="does not match"):
        load_model(tmp_path)


def test_unknown_backbone_is_named():
    with pytest.raises(ModelLoadError, match="no_such_net"):
        build_model(ModelConfig("no_such_net"))


@pytest.mark.parametrize("name", ["resnet18", "convnext_atto", "densenet121", "efficientnet_lite0"])
def test_any_timm_name_builds_one_logit(name):
    model = build_model(ModelConfig(name, input_size=64)).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, 64, 64)).shape == (1, 1)
