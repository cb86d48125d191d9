"""Ensembles: one Predictor over members, the calibrated mean, the "uncertain" flag, Grad-CAM at its decision."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.special import expit, logit

from cxr.cam import logit_and_cam
from cxr.forward import batched_logits
from cxr.inference import Member, Predictor
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
    # ResNet's last stage is its final activation: Grad-CAM there is the one-pass map (float rounding apart).
    expected = np.mean([logit_and_cam(m.model, batch, forced)[1] for m in members], axis=0)
    np.testing.assert_allclose(prediction.cam, expected, atol=1e-4)
    assert prediction.cam.shape == (96, 96)


def test_decision_boundary_matches_the_threshold(members, image):
    """At a threshold a hair below / above the ensemble's own probability the decision flips."""
    p = Predictor(members, ensemble_config(0.5)).predict(image).probability
    below, above = expit(logit(p) - 1e-3), expit(logit(p) + 1e-3)
    assert Predictor(members, ensemble_config(below)).predict(image).label == "PNEUMONIA"
    assert Predictor(members, ensemble_config(above)).predict(image).label == "NORMAL"


@pytest.mark.slow
def test_build_ensemble_writes_a_folder_that_evaluation_and_predictor_agree_on(data_dir, tmp_path):
    """Two small members on the recorded split → cxr.ensemble → the evaluation and the app's Predictor."""
    from cxr.ensemble import build_ensemble
    from cxr.evaluation import cached_images, combined, evaluate, load_members, validation_samples
    from cxr.hub import DEFAULT_MODEL, WEIGHTS_DIR
    from cxr.io import read_xray
    from cxr.model import ENSEMBLE_NAME, is_ensemble, save_model
    from cxr.stress import BANK

    recorded = ModelConfig.from_json(WEIGHTS_DIR / DEFAULT_MODEL / "config.json").train  # split, sizes
    folders = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        config = ModelConfig("test_resnet", input_size=224, train=recorded)
        folders.append(save_model(build_model(config), config, tmp_path / f"tiny{seed}"))
    cache = tmp_path / "cache"
    out = tmp_path / "ensemble"
    config = build_ensemble(folders, out, data_dir, cache_dir=str(cache))
    assert is_ensemble(out) and not (tmp_path / "ensemble.partial").exists()
    expected = [ENSEMBLE_NAME, "README.md", "metrics.json", "tiny0", "tiny1"]
    assert sorted(p.name for p in out.iterdir()) == sorted(expected)
    assert config.members == ["tiny0", "tiny1"] and config.calibration["chosen_by"] == "transfer"
    assert config.val_metrics["sensitivity"] >= 0.97  # the rule's threshold holds on the clean split
    assert set(config.stress_metrics["stress"]) == {s.name for s in BANK}
    assert "## Under acquisition changes" in (out / "README.md").read_text()
    by_rule = build_ensemble(folders, tmp_path / "stress_rule", data_dir, cache_dir=str(cache), rule="stress")
    assert by_rule.calibration["rule"] == "stress" and by_rule.calibration["chosen_by"] != "transfer"

    samples = validation_samples(data_dir, config)
    images = cached_images(samples, config, "val", cache)
    report = evaluate(out, samples, stress=True, images_u8=images, cache_dir=cache)
    assert report["auc"] == pytest.approx(config.val_metrics["auc"], abs=1e-9)
    for name, metrics in config.stress_metrics["stress"].items():
        assert report["stress"][name] == pytest.approx(metrics, abs=1e-9)

    picked = samples[::150]
    expected, _ = combined(load_members([out], images[::150]))
    answers = Predictor.from_folder(out).screen([read_xray(s.path) for s in picked])
    assert [a.probability for a in answers] == pytest.approx(list(expected), abs=1e-4)
