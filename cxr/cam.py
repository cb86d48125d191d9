"""Grad-CAM through pytorch-grad-cam, with the target layer taken from the model itself."""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch
from PIL import Image

MAX_OVERLAY_SIDE = 1024  # the overlay keeps the upload's aspect ratio, capped for speed
IMAGE_WEIGHT = 0.6  # the X-ray's share of the blend; the heat map gets the rest


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


class FinalActivations:
    """The feature map entering the pooled linear head, kept with its graph during forward passes.

    A context manager like grad-cam's (the hook lives only inside ``with``). For a model whose head
    is global average pooling then one linear layer, ``maps()`` is the class activation map (Zhou et
    al. 2016): each location's share of the logit, ``w . f(x, y)``, whose mean plus the bias *is* the
    logit. No backward is needed, and training can put a loss on it.
    """

    def __init__(self, model: torch.nn.Module):
        if not has_linear_pooled_head(model):
            raise ValueError(f"{type(model).__name__} has no average-pooled linear head: no class activation map")
        self.weight = model.get_classifier().weight[0]
        self.features: torch.Tensor | None = None
        self._handle = model.global_pool.register_forward_pre_hook(self._keep)

    def _keep(self, _module, inputs) -> None:
        self.features = inputs[0]

    def maps(self) -> torch.Tensor:
        """The last pass's class activation maps, (N, h, w): signed per-location logit contributions."""
        if self.features is None:
            raise RuntimeError("no forward pass inside the block yet")
        return torch.einsum("nchw,c->nhw", self.features, self.weight.to(self.features.dtype))

    def close(self) -> None:
        self._handle.remove()

    def __enter__(self) -> FinalActivations:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def has_linear_pooled_head(model: torch.nn.Module) -> bool:
    """True for timm CNNs whose logit is a linear layer over globally averaged features (EfficientNet, ResNet)."""
    pool = getattr(model, "global_pool", None)
    classifier = model.get_classifier() if hasattr(model, "get_classifier") else None
    return (
        getattr(pool, "pool_type", None) == "avg"
        and isinstance(classifier, torch.nn.Linear)
        and classifier.out_features == 1
    )


@torch.no_grad()
def logit_and_activation_map(model: torch.nn.Module, batch: torch.Tensor) -> tuple[float, torch.Tensor]:
    """One forward, no backward: the raw logit and the class activation map (h, w) it is the mean of."""
    with FinalActivations(model) as final:
        logit = float(model(batch).squeeze().item())
        return logit, final.maps()[0].float()


def decision_map(activation_map: torch.Tensor, pneumonia: bool, size: int) -> np.ndarray:
    """The map of one decision, in [0, 1] at ``size``: what Grad-CAM draws at the final activation.

    There Grad-CAM's channel weights are the classifier's (the gradient of a mean-pooled linear head),
    so its map is the positive part of the class activation map for the explained side. Scaled and
    resized as grad-cam's ``scale_cam_image`` does (min-max, cv2 bilinear), written out here because
    importing grad-cam costs the app's start about 1.5 s.
    """
    signed = activation_map if pneumonia else -activation_map
    cam = np.maximum(signed.detach().cpu().numpy().astype(np.float32), 0)
    cam = cam - cam.min()
    cam = cam / (1e-7 + cam.max())
    return cv2.resize(cam, (size, size))


class DecisionTarget:
    """Explain the model's own decision: the pneumonia logit if it calls pneumonia, else its negation."""

    def __init__(self, decision_logit: float):
        self.decision_logit = decision_logit

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        logit = output.squeeze()
        return logit if logit.item() >= self.decision_logit else -logit


def logit_and_cam(model: torch.nn.Module, batch: torch.Tensor, decision_logit: float) -> tuple[float, np.ndarray]:
    """One forward and one backward: the raw logit and a Grad-CAM map in [0, 1] at input size."""
    # Imported here: grad-cam pulls in scikit-learn, SciPy and matplotlib (~1.5 s), which the app's
    # start does not need; its warm-up answer pays for them while the server comes up.
    from pytorch_grad_cam import GradCAM

    layer = model.get_submodule(target_layer_name(model))
    with GradCAM(model=model, target_layers=[layer], reshape_transform=to_channels_first(model)) as cam:
        try:
            maps = cam(input_tensor=batch, targets=[DecisionTarget(decision_logit)])
        except IndexError as error:  # grad-cam's __exit__ would print it and swallow it: keep it raised
            raise RuntimeError(f"Grad-CAM failed on {type(model).__name__}: {error!r}") from error
        logit = float(cam.outputs.squeeze().item())
    return logit, maps[0]


def overlay(image: Image.Image, cam_map: np.ndarray) -> Image.Image:
    """The Grad-CAM map (jet colours) over the grayscale image, at the image's own aspect ratio.

    grad-cam's ``show_cam_on_image`` blend, done in uint8 with OpenCV: the same colours, about
    five times faster on a 1,024 px X-ray than its float32 path (the largest cost of an answer
    after the model itself).
    """
    scale = min(1.0, MAX_OVERLAY_SIDE / max(image.size))
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    base = np.asarray(image.convert("RGB").resize(size, Image.Resampling.BILINEAR))
    heat = cv2.resize(cam_map.astype(np.float32), size, interpolation=cv2.INTER_LINEAR)
    colours = cv2.applyColorMap(np.uint8(255 * np.clip(heat, 0, 1)), cv2.COLORMAP_JET)
    colours = cv2.cvtColor(colours, cv2.COLOR_BGR2RGB)
    blend = cv2.addWeighted(base, IMAGE_WEIGHT, colours, 1 - IMAGE_WEIGHT, 0)
    peak = int(blend.max())
    if 0 < peak < 255:  # as show_cam_on_image: the brightest pixel of the blend at full scale
        blend = cv2.convertScaleAbs(blend, alpha=255 / peak)
    return Image.fromarray(blend)
