"""Pneumonia screening on chest X-rays: timm backbones, calibrated probability and Grad-CAM.

The public names below load on first use, so ``import cxr.<module>`` (a command, an HTTP client
such as ``cxr.cli.loadtest``) pays only for what that module needs, not for torch, timm and grad-cam.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_HOMES = {
    "ImageReadError": "cxr.errors",
    "ModelLoadError": "cxr.errors",
    "ModelConfig": "cxr.model",
    "build_model": "cxr.model",
    "load_model": "cxr.model",
    "save_model": "cxr.model",
    "Prediction": "cxr.inference",
    "Predictor": "cxr.inference",
    "read_xray": "cxr.io",
    "bundled_models": "cxr.hub",
    "model_choices": "cxr.hub",
    "resolve_weights": "cxr.hub",
}
__all__ = [  # spelled out for linters and readers; test_architecture checks it matches _HOMES
    "ImageReadError",
    "ModelConfig",
    "ModelLoadError",
    "Prediction",
    "Predictor",
    "build_model",
    "bundled_models",
    "load_model",
    "model_choices",
    "read_xray",
    "resolve_weights",
    "save_model",
]

if TYPE_CHECKING:
    from cxr.errors import ImageReadError, ModelLoadError
    from cxr.hub import bundled_models, model_choices, resolve_weights
    from cxr.inference import Prediction, Predictor
    from cxr.io import read_xray
    from cxr.model import ModelConfig, build_model, load_model, save_model


def __getattr__(name: str) -> object:
    if name not in _HOMES:
        raise AttributeError(f"module 'cxr' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)
