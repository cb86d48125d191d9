"""Ensembles: one Predictor over members, the calibrated mean, the "uncertain" flag, Grad-CAM at its decision."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.special import expit, logit

from cxr.cam import logit_and_cam
from cxr.inference import Member, Predictor, batched_logits
from cxr.io import read_xray
from cxr.model import ModelConfig, build_model
from tests.conftest import EXAMPLES


def tiny_member(seed: int, temperature: float, bias: float) -> Member:
    torch.manual_seed(seed)
    config = ModelConfig("test_resnet", input_size=96, temperature=temperature, logit_bias=bias, threshold=0.5)
    return Member(build_model(config).eval(), config)


@pytest.fixture
def members() -> list[Member]:
    return [tiny_member(0, 1.5, 0.2), tiny_member(1, 0.8, -0.3), tiny_member(2, 1.0, 0.0)]


@pytest.fixture(scope="module")
def image():
    return read_xray(EXAMPLES[0])


def member_z(members: list[Member], image) -> np.ndarray:
    """Each member's calibrated logit, computed apart from the Predictor."""
    batch = Predictor(members[:1]).preprocess.tensor(image)[None]
    return np.array([batched_logits(m.model, batch)[0] / m.config.temperature + m.config.logit_bias for m in members])


def ensemble_config(threshold: float, temperature: float = 2.0, bias: float = 0.1) -> ModelConfig:
    return ModelConfig("ensemble", input_size=96, threshold=threshold, temperature=temperature, logit_bias=bias)


def test_probability_is_the_ensembles_calibration_of_the_mean_calibrated_logit(members, image):
    z = member_z(members, image)
    prediction = Predictor(members, ensemble_config(0.5)).predict(image)
    assert prediction.probability == pytest.approx(expit(z.mean() / 2.0 + 0.1), abs=1e-5)
    assert prediction.label == ("PNEUMONIA" if prediction.probability >= 0.5 else "NORMAL")
    screened = Predictor(members, ensemble_config(0.5)).screen([image, image])
    assert [p.probability for p in screened] == pytest.approx([prediction.probability] * 2, abs=1e-5)


def test_one_member_is_the_model_itself(members, image):
    z = member_z(members[:1], image)[0]
    prediction = Predictor(members[:1]).predict(image)
    assert prediction.probability == pytest.approx(expit(z), abs=1e-5) and not prediction.uncertain


def test_uncertain_when_members_fall_on_both_sides_of_the_threshold(members, image):
    z = member_z(members, image)
    assert z.max() - z.min() > 1e-3  # differently seeded members disagree somewhat
    # A threshold between the members' own answers: some vote pneumonia, some normal.
    between = expit((np.sort(z)[1] + np.sort(z)[0]) / 2 / 2.0 + 0.1)
    assert Predictor(members, ensemble_config(between)).predict(image).uncertain
    for far in (1e-6, 1 - 1e-6):  # every member on one side
        assert not Predictor(members, ensemble_config(far)).predict(image).uncertain


def test_grad_cam_explains_the_ensembles_decision_in_every_member(members, image):
    z = member_z(members, image)
    between = expit((np.sort(z)[1] + np.sort(z)[0]) / 2 / 2.0 + 0.1)
    predictor = Predictor(members, ensemble_config(between))
    prediction = predictor.predict(image)
    batch = predictor.preprocess(image)
    forced = -math.inf if prediction.label == "PNEUMONIA" else math.inf  # the ensemble's side, for all
    expected = np.mean([logit_and_cam(m.model, batch, forced)[1] for m in members], axis=0)
    np.testing.assert_allclose(prediction.cam, expected, atol=1e-5)
    assert prediction.cam.shape == (96, 96)


def test_decision_boundary_matches_the_threshold(members, image):
    """At a threshold a hair below / above the ensemble's own probability the decision flips."""
    p = Predictor(members, ensemble_config(0.5)).predict(image).probability
    below, above = expit(logit(p) - 1e-3), expit(logit(p) + 1e-3)
    assert Predictor(members, ensemble_config(below)).predict(image).label == "PNEUMONIA"
    assert Predictor(members, ensemble_config(above)).predict(image).label == "NORMAL"
