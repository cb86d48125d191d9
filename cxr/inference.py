"""Probability of pneumonia and its Grad-CAM map from one forward pass."""

from __future__ import annotations

import contextlib
import math
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cxr.cam import logit_and_cam, overlay, target_layer_name
from cxr.metrics import probabilities
from cxr.model import ModelConfig, freeze_before, load_model, preprocessing_for
from cxr.ood import FeatureCapture, OodScorer


@torch.no_grad()
def batched_logits(
    model: torch.nn.Module, images_u8: torch.Tensor, batch_size: int = 64, flip: bool = False
) -> np.ndarray:
    """The one batched inference loop: uint8 (N, 1, S, S) at the model's input size → raw logits.

    Normalisation comes from the model's own data config; ``flip`` averages each logit with its
    mirror image's (flip TTA).
    """
    pre = preprocessing_for(model)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    chunks = []
    for start in range(0, len(images_u8), batch_size):
        batch = pre.batch(list(images_u8[start : start + batch_size])).to(device)
        logits = model(batch).squeeze(1)
        if flip:
            logits = (logits + model(batch.flip(-1)).squeeze(1)) / 2
        chunks.append(logits.float().cpu())
    model.train(was_training)
    return torch.cat(chunks).numpy()


@dataclass(frozen=True)
class Prediction:
    probability: float  # calibrated P(PNEUMONIA)
    label: str  # the decision at the model's threshold
    threshold: float
    cam: np.ndarray | None  # Grad-CAM map in [0, 1] at model input size (None from ``screen``)
    ood_distance: float | None = None  # distance from the training X-rays (None: no check fitted)
    unusual: bool = False  # True: does not look like the training data, the answer is unreliable

    def confidences(self) -> dict[str, float]:
        return {"PNEUMONIA": self.probability, "NORMAL": 1.0 - self.probability}


class Predictor:
    """A loaded model ready to answer: preprocessing derived from it, Grad-CAM from the same pass."""

    def __init__(self, model: torch.nn.Module, config: ModelConfig, ood: OodScorer | None = None):
        self.model, self.config, self.ood = model.eval(), config, ood
        self.preprocess = preprocessing_for(model)
        # Grad-CAM needs gradients only from the last stage on: the backward stops there.
        with contextlib.suppress(ValueError):  # a parameter-free target stage: keep full gradients
            freeze_before(model, target_layer_name(model))
        # Grad-CAM hooks live on the shared model, so one request at a time may hold them.
        self._lock = threading.Lock()
        # P >= threshold  <=>  raw logit >= this value (the sign Grad-CAM explains)
        p = min(max(config.threshold, 1e-6), 1 - 1e-6)
        self._decision_logit = config.temperature * (math.log(p / (1 - p)) - config.logit_bias)

    @classmethod
    def from_folder(cls, folder: str | Path) -> Predictor:
        model, config = load_model(folder)
        return cls(model, config, OodScorer.from_folder(Path(folder), config))

    def predict(self, image: Image.Image) -> Prediction:
        """``image`` in any size or mode → calibrated probability, decision and Grad-CAM map."""
        batch = self.preprocess(image)
        with self._lock, self._capture() as capture:
            logit, cam_map = logit_and_cam(self.model, batch, self._decision_logit)
        return self._prediction(logit, capture.features[0] if capture else None, cam_map)

    @torch.no_grad()
    def screen(self, images: list[Image.Image]) -> list[Prediction]:
        """Many images in one forward pass, without Grad-CAM (``cam`` is None): for batch use."""
        batch = self.preprocess.batch([self.preprocess.tensor(image) for image in images])
        with self._lock, self._capture() as capture:
            logits = self.model(batch).squeeze(1).float().tolist()
        return [
            self._prediction(logit, capture.features[i] if capture else None, None) for i, logit in enumerate(logits)
        ]

    def _capture(self) -> contextlib.AbstractContextManager[FeatureCapture | None]:
        """The pooled features of the next pass, for the out-of-distribution check (None without one)."""
        return FeatureCapture(self.model) if self.ood else contextlib.nullcontext()

    def _prediction(self, logit: float, features: torch.Tensor | None, cam_map: np.ndarray | None) -> Prediction:
        probability = float(probabilities(logit, self.config.temperature, self.config.logit_bias))
        distance = float(self.ood.distance(features[None])[0]) if features is not None else None
        unusual = distance is not None and distance > self.ood.threshold
        return Prediction(probability, self.decide(probability), self.config.threshold, cam_map, distance, unusual)

    def decide(self, probability: float) -> str:
        """The label at the model's screening threshold."""
        return self.config.labels[int(probability >= self.config.threshold)]

    def explain(self, image: Image.Image) -> tuple[Prediction, Image.Image]:
        """The prediction and its Grad-CAM overlay on ``image``."""
        prediction = self.predict(image)
        return prediction, overlay(image, prediction.cam)
