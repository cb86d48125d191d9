"""Weights travel with their config; loading is strict and checked."""

from __future__ import annotations

import json

import pytest
import timm
import torch
from PIL import Image
from timm.models._hub import _parse_model_cfg

from cxr.hub import WEIGHTS_DIR
from cxr.model import (
    CONFIG_NAME,
    PROJECT_KEY,
    WEIGHTS_NAME,
    ModelConfig,
    ModelLoadError,
    build_model,
    freeze_before,
    load_model,
    module_before,
    preprocessing_for,
    save_model,
)
from tests.conftest import EXAMPLES


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


def test_config_is_timm_hub_format_with_the_project_fields_apart(tiny, tmp_path):
    model, config, _ = tiny
    config.train = {"split": {"seed": 0}}
    save_model(model, config, tmp_path)
    data = json.loads((tmp_path / CONFIG_NAME).read_text())
    assert data["architecture"] == "test_resnet" and data["num_classes"] == 1
    assert data["label_names"] == ["PNEUMONIA"]  # the one logit's class
    assert data["pretrained_cfg"]["input_size"] == [1, 64, 64]
    assert data[PROJECT_KEY]["labels"] == ["NORMAL", "PNEUMONIA"] and data[PROJECT_KEY]["train"]["split"]["seed"] == 0
    # timm's own parser reads what it needs from it
    pretrained_cfg, name, model_args = _parse_model_cfg(data, {"source": "local-dir"})
    assert name == "test_resnet" and pretrained_cfg["num_classes"] == 1 and model_args["in_chans"] == 1


def test_timm_loads_a_weights_folder_as_it_is(tiny, tmp_path):
    """timm's own loader (``local-dir:``; ``hf-hub:`` reads the same files) gives our logits."""
    model, config, x = tiny
    save_model(model, config, tmp_path, dtype=torch.float32)
    theirs = timm.create_model(f"local-dir:{tmp_path}", pretrained=True).eval()
    ours, _ = load_model(tmp_path)
    with torch.no_grad():
        assert torch.allclose(theirs(x), ours(x), atol=1e-5)
    assert timm.data.resolve_model_data_config(theirs)["crop_mode"] == "squash"


def test_timm_transform_reproduces_our_preprocessing(tiny, tmp_path):
    """The data config in config.json is the real one: timm's eval transform gives our input tensor."""
    model, config, _ = tiny
    save_model(model, config, tmp_path)
    theirs = timm.create_model(f"local-dir:{tmp_path}", pretrained=True)
    transform = timm.data.create_transform(**timm.data.resolve_data_config(model=theirs))
    ours = preprocessing_for(load_model(tmp_path)[0])
    image = Image.open(EXAMPLES[0]).convert("L").resize((300, 257))
    assert torch.equal(transform(image), ours(image)[0])


@pytest.mark.parametrize("key, value", [("crop_mode", "center"), ("crop_pct", 0.875), ("interpolation", "bicubic")])
def test_a_preprocessing_we_do_not_apply_is_refused(tiny, tmp_path, key, value):
    model, config, _ = tiny
    save_model(model, config, tmp_path)
    data = json.loads((tmp_path / CONFIG_NAME).read_text())
    data["pretrained_cfg"][key] = value
    (tmp_path / CONFIG_NAME).write_text(json.dumps(data))
    with pytest.raises(ModelLoadError, match=key):
        load_model(tmp_path)


def test_bundled_configs_round_trip():
    for path in sorted(WEIGHTS_DIR.glob(f"*/{CONFIG_NAME}")):
        data = json.loads(path.read_text())
        assert ModelConfig.from_dict(json.loads(path.read_text())).to_dict() == data, path


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


@pytest.mark.parametrize("name", ["resnet18", "convnext_atto", "densenet121", "efficientnet_lite0", "test_vit"])
def test_any_timm_name_builds_one_logit(name):
    """Convolutional nets take any size; a transformer's grid is fixed at build time (img_size)."""
    model = build_model(ModelConfig(name, input_size=64)).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, 64, 64)).shape == (1, 1)


@pytest.mark.parametrize(
    ("name", "freeze_until", "expected"),
    [("efficientnet_lite0", "blocks.4", "blocks.3"), ("resnet18", "layer3", "layer2"), ("resnet18", "conv1", None)],
)
def test_the_stage_before_the_first_trained_one(name, freeze_until, expected):
    """The out-of-population check pools the last stage a fine-tune leaves at its starting weights."""
    model = build_model(ModelConfig(name, input_size=64))
    assert module_before(model, freeze_until) == expected
    if expected:
        freeze_before(model, freeze_until)
        assert not any(p.requires_grad for p in model.get_submodule(expected).parameters())
