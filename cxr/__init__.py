"""Pneumonia screening on chest X-rays: timm backbones, calibrated probability and Grad-CAM."""

from cxr.hub import bundled_models, model_choices, resolve_weights
from cxr.inference import Prediction, Predictor
from cxr.io import ImageReadError, read_xray
from cxr.model import ModelConfig, ModelLoadError, build_model, load_model, save_model

__all__ = [
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
