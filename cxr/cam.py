"""Grad-CAM through pytorch-grad-cam, with the target layer taken from the model itself."""

from __future__ import annotations

import cv2
import numpy as np
import torch
from PIL import Image
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.image import show_cam_on_image

MAX_OVERLAY_SIDE = 1024  # the overlay keeps the upload's aspect ratio, capped for speed


def target_layer_name(model: torch.nn.Module) -> str:
    """The last feature stage timm reports for this model (e.g. ``layer4``, ``blocks.6``)."""
    return model.feature_info[-1]["module"]


class DecisionTarget:
    """Explain the model's own decision: the pneumonia logit if it calls pneumonia, else its negation."""

    def __init__(self, decision_logit: float):
        self.decision_logit = decision_logit

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        logit = output.squeeze()
        return logit if logit.item() >= self.decision_logit else -logit


def logit_and_cam(model: torch.nn.Module, batch: torch.Tensor, decision_logit: float) -> tuple[float, np.ndarray]:
    """One forward and one backward: the raw logit and a Grad-CAM map in [0, 1] at input size."""
    layer = model.get_submodule(target_layer_name(model))
    with GradCAM(model=model, target_layers=[layer]) as cam:
        maps = cam(input_tensor=batch, targets=[DecisionTarget(decision_logit)])
        logit = float(cam.outputs.squeeze().item())
    return logit, maps[0]


def overlay(image: Image.Image, cam_map: np.ndarray) -> Image.Image:
    """The Grad-CAM map over the grayscale image, at the image's own aspect ratio."""
    scale = min(1.0, MAX_OVERLAY_SIDE / max(image.size))
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    base = np.asarray(image.convert("RGB").resize(size, Image.Resampling.BILINEAR), dtype=np.float32) / 255
    heat = cv2.resize(cam_map.astype(np.float32), size, interpolation=cv2.INTER_LINEAR)
    return Image.fromarray(show_cam_on_image(base, heat, use_rgb=True, image_weight=0.6))
