"""Probability of pneumonia and the map of its decision from one forward pass."""

from __future__ import annotations

import contextlib
import hashlib
import math
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cxr.adapt import Adaptation, adapted
from cxr.cam import (
    decision_map,
    has_linear_pooled_head,
    logit_and_activation_map,
    logit_and_cam,
    overlay,
    target_layer_name,
)
from cxr.data import LABELS
from cxr.forward import FeatureCapture, batched_logits
from cxr.fov import field_of_view, paste
from cxr.metrics import probabilities
from cxr.model import (
    CONFIG_NAME,
    ENSEMBLE_NAME,
    ModelConfig,
    ModelLoadError,
    freeze_before,
    is_ensemble,
    load_model,
    preprocessing_for,
)
from cxr.ood import REASON as OOD_REASON
from cxr.ood import OodScorer

NOT_ASSESSED = "NOT_ASSESSED"  # the decision for an image outside the population the model was made for


@dataclass(frozen=True)
class Prediction:
    probability: float  # calibrated P(PNEUMONIA)
    label: str  # the class at the model's threshold (what Grad-CAM explains), whatever the image
    threshold: float
    cam: np.ndarray | None  # Grad-CAM map in [0, 1] at model input size (None from ``screen``)
    ood_distance: float | None = None  # distance from the training X-rays (None: no check fitted)
    unusual: bool = False  # True: does not look like the training data, the answer is unreliable
    uncertain: bool = False  # True: an ensemble's members fall on both sides of the threshold
    labels: tuple[str, str] = LABELS  # (negative, positive): the config's, NORMAL and PNEUMONIA

    @property
    def decision(self) -> str:
        """The screening decision: ``label``, or ``NOT_ASSESSED`` when the image is unusual (no
        decision is given for an image unlike the children's X-rays the model was trained on)."""
        return NOT_ASSESSED if self.unusual else self.label

    def confidences(self) -> dict[str, float]:
        negative, positive = self.labels
        return {positive: self.probability, negative: 1.0 - self.probability}

    def record(self) -> dict:
        """The answer as plain JSON values: what API clients and the batch CSV get."""
        return {
            "probability": self.probability,
            "decision": self.decision,
            "threshold": self.threshold,
            "unusual": self.unusual,
            "reason": OOD_REASON if self.unusual else None,  # why "unusual", in words a client can show
            "uncertain": self.uncertain,
            "ood_distance": self.ood_distance,
        }


@dataclass(frozen=True)
class _Pass:
    """What one member's forward pass over an image left: its logit, OOD features and map material."""

    logit: float
    features: torch.Tensor | None
    activation: torch.Tensor | None  # class activation map (h, w): CNNs with a pooled linear head
    grad_cam: np.ndarray | None  # Grad-CAM of the member's own decision: every other model


@dataclass
class Member:
    """One network of a Predictor, with its own calibration and out-of-distribution check."""

    model: torch.nn.Module
    config: ModelConfig
    ood: OodScorer | None = None

    def calibrated_logit(self, logit: float) -> float:
        return logit / self.config.temperature + self.config.logit_bias

    def raw_logit(self, calibrated: float) -> float:
        return (calibrated - self.config.logit_bias) * self.config.temperature


class Predictor:
    """Loaded model(s) ready to answer: preprocessing derived from them, Grad-CAM from the same pass.

    One model, or an ensemble (a folder with ``ensemble.json``): each member's calibrated logit
    ``z_i = logit_i / T_i + b_i`` is averaged, ``P = sigmoid(mean z / T + b)`` with the ensemble's own
    temperature, bias and threshold (fitted by the stress rule). A member "votes" pneumonia when its
    own ``z_i`` alone would cross the ensemble's threshold; votes on both sides make the answer
    *uncertain*. Grad-CAM is the mean of the members' maps, each explaining the ensemble's decision.
    """

    def __init__(self, members: list[Member], config: ModelConfig | None = None):
        self.members = members
        # One model: its own calibration is the answer's. An ensemble: its config calibrates the mean.
        self.config = config or members[0].config
        self.ensemble = config is not None
        self.preprocess = preprocessing_for(members[0].model)
        for member in members:
            member.model.eval()
            if preprocessing_for(member.model) != self.preprocess:
                raise ModelLoadError(f"ensemble members need one preprocessing: {member.config.architecture} differs")
            if not has_linear_pooled_head(member.model):
                # Grad-CAM needs gradients only from the last stage on: the backward stops there.
                with contextlib.suppress(ValueError):  # a parameter-free target stage: keep full gradients
                    freeze_before(member.model, target_layer_name(member.model))
        # The map's hooks live on the shared models, so one request at a time may hold them.
        self._lock = threading.RLock()  # re-entered by screen() inside adapted_to()
        p = min(max(self.config.threshold, 1e-6), 1 - 1e-6)
        # P >= threshold  <=>  mean calibrated logit >= this value
        self._decision_z = math.log(p / (1 - p)) if not self.ensemble else self._uncalibrate(math.log(p / (1 - p)))

    @property
    def weights_sha256(self) -> str:
        """The weights' checksum; an ensemble's is that of its members' checksums in order."""
        shas = [member.config.weights_sha256 for member in self.members]
        return shas[0] if not self.ensemble else ensemble_sha256(shas)

    @property
    def model(self) -> torch.nn.Module:
        """The first (for one model, the only) network."""
        return self.members[0].model

    @classmethod
    def from_folder(cls, folder: str | Path) -> Predictor:
        folder = Path(folder)
        if is_ensemble(folder):
            config = ModelConfig.from_json(folder / ENSEMBLE_NAME)
            return cls([_load_member(folder / name) for name in config.members], config)
        return cls([_load_member(folder)])

    def predict(self, image: Image.Image) -> Prediction:
        """``image`` in any size or mode → calibrated probability, decision and its map (in the whole
        image's frame, also for a model that looks at a crop of it).

        A CNN with a pooled linear head answers in one forward pass: its map is the class activation
        map, which is Grad-CAM at the final activation, for the decision taken. Other models (ViTs)
        get Grad-CAM at their last stage, one forward and one backward.
        """
        image_u8 = self.preprocess.tensor(image)[None]
        with self._lock:
            views = [self._view(member, image_u8) for member in self.members]
            passes = [self._pass(member, batch) for member, (batch, _) in zip(self.members, views, strict=True)]
            z = [member.calibrated_logit(p.logit) for member, p in zip(self.members, passes, strict=True)]
            pneumonia = float(np.mean(z)) >= self._decision_z
            maps = []
            for member, (batch, box), p, z_i in zip(self.members, views, passes, z, strict=True):
                cam_map = self._explain(member, batch, p, pneumonia, own_side=(z_i >= self._decision_z) == pneumonia)
                maps.append(paste(cam_map, box) if box is not None else cam_map)
        return self._prediction(z, [p.features for p in passes], np.mean(maps, axis=0))

    @torch.no_grad()
    def screen(self, images: list[Image.Image]) -> list[Prediction]:
        """Many images in one forward pass, without Grad-CAM (``cam`` is None): for batch use."""
        images_u8 = torch.stack([self.preprocess.tensor(image) for image in images])
        z, features = [], []
        with self._lock:
            for member in self.members:
                with _capture(member) as capture:
                    logits = batched_logits(member.model, images_u8, batch_size=len(images))
                z.append([member.calibrated_logit(float(logit)) for logit in logits])
                features.append(capture.all() if capture else None)
        return [
            self._prediction([zs[i] for zs in z], [f[i] if f is not None else None for f in features], None)
            for i in range(len(images))
        ]

    @contextlib.contextmanager
    def adapted_to(self, images_u8: torch.Tensor) -> Iterator[list[Adaptation]]:
        """Every member adapted to one site's batch (uint8 (N, 1, S, S) at input size) inside the block
        (``cxr.adapt``): for batch screening of one site, never for a single image."""
        with self._lock, contextlib.ExitStack() as stack:
            yield [stack.enter_context(adapted(m.model, m.config, images_u8, m.ood)) for m in self.members]

    def _view(self, member: Member, image_u8: torch.Tensor) -> tuple[torch.Tensor, tuple | None]:
        """What ``member`` looks at: the model input, and the lung box it was cut from (None: the whole image)."""
        fov = field_of_view(member.model)
        if fov is None:
            return self.preprocess.batch(list(image_u8)), None
        crops, boxes = fov.frame(image_u8)
        return self.preprocess.batch(list(crops)), boxes[0]

    def _pass(self, member: Member, batch: torch.Tensor) -> _Pass:
        """One member's pass over its view: the logit, the OOD features and what its map is made from."""
        with _capture(member) as capture:
            if has_linear_pooled_head(member.model):
                logit, activation = logit_and_activation_map(member.model, batch)
                grad_cam = None
            else:  # Grad-CAM of the member's own decision, from the same forward
                logit, grad_cam = logit_and_cam(member.model, batch, member.raw_logit(self._decision_z))
                activation = None
        return _Pass(logit, capture.features[0] if capture else None, activation, grad_cam)

    @staticmethod
    def _explain(member: Member, batch: torch.Tensor, p: _Pass, pneumonia: bool, own_side: bool) -> np.ndarray:
        """The member's map of the answer's decision (for an ensemble, not the member's own)."""
        if p.activation is not None:
            return decision_map(p.activation, pneumonia, batch.shape[-1])
        if own_side:
            return p.grad_cam
        return logit_and_cam(member.model, batch, -math.inf if pneumonia else math.inf)[1]

    def _uncalibrate(self, logit: float) -> float:
        """The mean calibrated member logit at which the ensemble's own calibration gives ``logit``."""
        return (logit - self.config.logit_bias) * self.config.temperature

    def _prediction(self, z: list[float], features: list, cam_map: np.ndarray | None) -> Prediction:
        mean_z = float(np.mean(z))
        calibrated = mean_z / self.config.temperature + self.config.logit_bias if self.ensemble else mean_z
        probability = float(probabilities(calibrated))
        votes = {z_i >= self._decision_z for z_i in z}
        checks = [
            (float(m.ood.distance(f[None])[0]), m.ood.threshold)
            for m, f in zip(self.members, features, strict=True)
            if m.ood is not None and f is not None
        ]
        distance = checks[0][0] if checks else None
        unusual = bool(checks) and sum(d > t for d, t in checks) * 2 > len(checks)  # most members say so
        return Prediction(
            probability,
            self.decide(probability),
            self.config.threshold,
            cam_map,
            distance,
            unusual,
            len(votes) > 1,
            tuple(self.config.labels),
        )

    def decide(self, probability: float) -> str:
        """The label at the model's screening threshold."""
        return self.config.labels[int(probability >= self.config.threshold)]

    def explain(self, image: Image.Image) -> tuple[Prediction, Image.Image]:
        """The prediction and its Grad-CAM overlay on ``image``."""
        prediction = self.predict(image)
        return prediction, overlay(image, prediction.cam)


def ensemble_sha256(member_shas: list[str]) -> str:
    """An ensemble's checksum: that of its members' weights checksums, in order."""
    return hashlib.sha256("".join(member_shas).encode()).hexdigest()


def folder_sha256(folder: Path) -> str:
    """The checksum a Predictor loaded from ``folder`` reports, read from its configs alone."""
    if not is_ensemble(folder):
        return ModelConfig.from_json(folder / CONFIG_NAME).weights_sha256
    members = ModelConfig.from_json(folder / ENSEMBLE_NAME).members
    return ensemble_sha256([ModelConfig.from_json(folder / name / CONFIG_NAME).weights_sha256 for name in members])


def _load_member(folder: Path) -> Member:
    model, config = load_model(folder)
    return Member(model, config, OodScorer.from_folder(folder, config))


def _capture(member: Member) -> contextlib.AbstractContextManager[FeatureCapture | None]:
    """The pooled features of the next pass, for the out-of-distribution check (None without one)."""
    return FeatureCapture(member.model, member.ood.layer) if member.ood else contextlib.nullcontext()
