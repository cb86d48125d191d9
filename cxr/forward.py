"""The one batched inference loop and the feature capture, below everything that runs a model.

``batched_logits`` serves training validation, evaluation, the OOD fit, batch prediction and site
adaptation; ``FeatureCapture`` gives the OOD check (and the adaptation's mixture test) the features
of the same passes.
"""

from __future__ import annotations

import numpy as np
import torch

from cxr.fov import framed
from cxr.model import preprocessing_for


@torch.no_grad()
def batched_logits(
    model: torch.nn.Module, images_u8: torch.Tensor, batch_size: int = 64, flip: bool = False
) -> np.ndarray:
    """The one batched inference loop: uint8 (N, 1, S, S) at the model's input size → raw logits.

    Normalisation comes from the model's own data config, and so does the crop to the lungs for a
    model with a field of view (``cxr.fov``); ``flip`` averages each logit with its mirror image's
    (flip TTA).
    """
    pre = preprocessing_for(model)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    chunks = [torch.zeros(0)]
    try:
        for start in range(0, len(images_u8), batch_size):
            batch = pre.batch(list(framed(model, images_u8[start : start + batch_size]))).to(device)
            logits = model(batch).squeeze(1)
            if flip:
                logits = (logits + model(batch.flip(-1)).squeeze(1)) / 2
            chunks.append(logits.float().cpu())
    finally:
        model.train(was_training)
    return torch.cat(chunks).numpy()


class LayerReachedError(Exception):
    """Raised by a stopping ``FeatureCapture`` once its layer has run: the pass is cut short on purpose."""


class FeatureCapture:
    """Captures features during forward passes (no second pass): by default the pooled features
    entering the classifier; with ``layer``, that module's output averaged over space.

    A context manager like grad-cam's: the hook lives only inside ``with``. ``features`` is the
    last pass's, ``all()`` every pass's since entering, in order. ``stop``: the pass ends at ``layer``
    (raises ``LayerReachedError``) when nothing after it is wanted.
    """

    def __init__(self, model: torch.nn.Module, layer: str | None = None, stop: bool = False):
        self.batches: list[torch.Tensor] = []
        self.stop = stop
        if layer:
            self._handle = model.get_submodule(layer).register_forward_hook(self._pool)
        else:
            self._handle = model.get_classifier().register_forward_pre_hook(self._keep)

    @property
    def features(self) -> torch.Tensor | None:
        """The last pass's features (N, C), or None before any pass."""
        return self.batches[-1] if self.batches else None

    def all(self) -> torch.Tensor:
        """Every pass's features since entering, concatenated in order."""
        return torch.cat(self.batches)

    def _keep(self, _module, inputs) -> None:
        self.batches.append(inputs[0].detach().float().flatten(1))

    def _pool(self, _module, _inputs, output) -> None:
        self.batches.append(output.detach().float().mean(dim=(2, 3)))
        if self.stop:
            raise LayerReachedError  # the rest of the network would be computed for nothing

    def close(self) -> None:
        self._handle.remove()

    def __enter__(self) -> FeatureCapture:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()  # the hook must not outlive the passes it was set for
