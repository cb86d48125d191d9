"""Grad-CAM through pytorch-grad-cam, with the target layer taken from the model itself."""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch
from PIL import Image
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.image import show_cam_on_image

MAX_OVERLAY_SIDE = 1024  # the overlay keeps the upload's aspect ratio, capped for speed


def target_layer_name(model: torch.nn.Module) -> str:
    """The last feature stage timm reports for this model (e.g. ``layer4``, ``blocks.6``)."""
    name = model.feature_info[-1]["module"]
    if getattr(model, "global_pool", None) == "token" and hasattr(model.get_submodule(name), "norm1"):
        # After a ViT's last block only the class token reaches the head; its patch tokens get no
        # gradient there. Explain the last block's input instead (the usual ViT Grad-CAM layer).
        name += ".norm1"
    return name


def to_channels_first(model: torch.nn.Module):
    """Grad-CAM wants (N, C, H, W): reshape ViT tokens and NHWC stages (Swin and friends)."""
    prefix_tokens = getattr(model, "num_prefix_tokens", 0)
    nhwc = str(getattr(model, "output_fmt", "NCHW")) in ("NHWC", "Format.NHWC")

    def transform(activation: torch.Tensor) -> torch.Tensor:
        if activation.ndim == 3:  # (N, tokens, C): drop class/register tokens, lay patches on a grid
            patches = activation[:, prefix_tokens:]
            side = math.isqrt(patches.shape[1])
            return patches.reshape(patches.shape[0], side, side, -1).permute(0, 3, 1, 2)
        return activation.permute(0, 3, 1, 2) if nhwc else activation

    return transform


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
    with GradCAM(model=model, target_layers=[layer], reshape_transform=to_channels_first(model)) as cam:
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
