"""Calibration rules and their transfer, on synthetic logits with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from cxr.calibrate import RULES, best_rule, compare_rules, fit_rule, transfer
from cxr.metrics import fit_calibration, probabilities
from cxr.stress import BANK, family_of


def _site(n: int = 400, seed: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Clean logits that separate the classes, and every shift of the bank a copy of them moved by its family."""
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < 0.7).astype(int)
    clean = np.where(labels == 1, 2.0, -2.0) + rng.normal(0, 1.2, n)
    moves = {"framing": 1.5, "intensity": 0.2, "texture": -0.3, "geometry": 0.1, "markers": 0.0}
    logits = {"clean": clean}
    for shift in BANK:
        logits[shift.name] = clean + moves[family_of(shift)]
    return logits, labels


def test_every_rule_keeps_its_sensitivity_where_it_was_fitted():
    logits, labels = _site()
    for rule in RULES:
        fit = fit_rule(rule, logits, labels, 0.97)
        clean = probabilities(logits["clean"], fit.temperature, fit.bias) >= fit.threshold
        assert clean[labels == 1].mean() >= 0.97, rule
    worst = fit_rule("worst", logits, labels, 0.97)
    for name, values in logits.items():  # "worst" holds on every single shift
        predicted = probabilities(values, worst.temperature, worst.bias) >= worst.threshold
        assert predicted[labels == 1].mean() >= 0.97, name


def test_families_rule_weighs_each_family_as_much_as_the_clean_split():
    """Framing has five shifts, geometry one: with each family's shifts identical, the weighted fit
    equals an unweighted fit on the clean split plus one shift of each family."""
    logits, labels = _site()
    fit = fit_rule("families", logits, labels, 0.97)
    representatives = {}
    for shift in BANK:
        representatives.setdefault(family_of(shift), shift.name)
    names = ["clean", *representatives.values()]
    expected = fit_calibration(np.concatenate([logits[n] for n in names]), np.tile(labels, len(names)))
    assert (fit.temperature, fit.bias) == pytest.approx(expected, rel=1e-4)


def test_transfer_scores_each_family_on_a_fit_that_never_saw_it():
    """Framing moves every logit up: a rule fitted without framing calls more normals pneumonia there
    than on any other family; held-out sensitivity on framing stays high for the same reason."""
    logits, labels = _site()
    groups = np.arange(len(labels)) // 2  # two images per patient
    result = transfer("stress", logits, labels, 0.97, groups)
    assert set(result) == {"framing", "intensity", "texture", "geometry", "markers", "summary"}
    others = [result[f]["specificity"] for f in ("intensity", "texture", "geometry", "markers")]
    assert result["framing"]["specificity"] < min(others)
    assert result["summary"]["worst_specificity"] == result["framing"]["specificity"]


def test_the_best_rule_keeps_sensitivity_first_then_specificity():
    def summary(sens, spec, ece):
        return {"summary": {"worst_sensitivity": sens, "worst_specificity": spec, "worst_ece": ece}}

    transfers = {
        "clean": summary(0.90, 0.99, 0.01),  # drops sensitivity: out
        "stress": summary(0.96, 0.80, 0.05),
        "worst": summary(0.99, 0.70, 0.04),
        "families": summary(0.965, 0.80, 0.03),  # the same specificity as stress, a better ECE
    }
    assert best_rule(transfers, 0.97) == "families"
    transfers["stress"] = summary(0.96, 0.81, 0.05)  # higher specificity first
    assert best_rule(transfers, 0.97) == "stress"
    assert best_rule({"clean": transfers["clean"]}, 0.97) == "clean"  # none keeps it: the closest


def test_compare_rules_names_one_of_its_rules():
    logits, labels = _site()
    comparison = compare_rules(logits, labels, 0.97)
    assert comparison["best"] in RULES and set(comparison["rules"]) == set(RULES)
