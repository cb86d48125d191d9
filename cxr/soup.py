"""Average the weights of fine-tunes that share one pretrained start (a uniform "model soup").

Networks fine-tuned from the same ImageNet weights tend to lie in one basin, where the mean of their
weights is itself a good network (Wortsman et al. 2022, "Model soups"), often more robust to shift
than any one of them, at the cost of one model. The soup is written like a trained folder: fp16
weights, then the stress-rule calibration (``cxr.calibrate``) and the out-of-distribution fit
(``cxr.ood``), both on the soup as shipped.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch

from cxr.evaluation import cached_images, recorded_split
from cxr.folder import calibrate_and_check, staged, write_records
from cxr.fov import FOV_DIR, field_of_view
from cxr.model import ModelConfig, ModelLoadError, load_model, same_split, save_model


def average_weights(models: list[torch.nn.Module]) -> dict[str, torch.Tensor]:
    """The element-wise mean of the float tensors of same-architecture models (BN statistics too)."""
    states = [m.state_dict() for m in models]
    if any(s.keys() != states[0].keys() for s in states):
        raise ValueError("soup members must share one architecture")
    return {
        name: torch.stack([s[name].float() for s in states]).mean(0) if tensor.is_floating_point() else tensor
        for name, tensor in states[0].items()
    }


def make_soup(members: list[Path], out: Path, data_dir: str | Path, cache_dir: str = ".cache") -> ModelConfig:
    """Average ``members`` into ``out``: weights, calibration by the stress rule, OOD fit, card."""
    loaded = [load_model(folder) for folder in members]
    first_model, first = loaded[0]
    if any(c.architecture != first.architecture or not same_split(c, first) or c.fov != first.fov for _, c in loaded):
        raise ModelLoadError(
            f"soup members must share one architecture, one validation split and one field of view: {members}"
        )
    model = copy.deepcopy(first_model)
    model.load_state_dict(average_weights([m for m, _ in loaded]), strict=True)
    config = copy.deepcopy(first)
    config.train = {
        **first.train,
        "soup_of": {folder.name: c.train.get("args", {}) for folder, (_, c) in zip(members, loaded, strict=True)},
        "minutes": round(sum(c.train.get("minutes", 0) for _, c in loaded), 1),
    }
    train, val = recorded_split(data_dir, config)
    train_images = cached_images(train, config, "train", cache_dir)
    val_images = cached_images(val, config, "val", cache_dir)
    labels = np.array([s.label for s in val])
    target = first.train.get("args", {}).get("target_sensitivity", 0.97)  # the members' own recorded target
    with staged(out) as staging:
        fov = field_of_view(first_model)
        if fov is not None:  # the members' one segmenter travels with the soup
            config.fov = fov.save(staging / FOV_DIR)
        save_model(model, config, staging)
        calibrate_and_check(staging, config, val_images, labels, train_images, target, cache_dir=cache_dir)
        write_records(staging, config, published_as=out)
    return config
