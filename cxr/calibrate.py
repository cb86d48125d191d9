"""Fit temperature, bias and screening threshold on validation logits, by a rule judged by transfer.

A rule turns raw validation logits (clean, and under the bank's shifts) into a Platt temperature and
bias and a screening threshold. Rules:

- ``clean``: Platt and the threshold (sensitivity >= target) on the clean split alone.
- ``stress``: Platt on clean + every shifted copy pooled; the threshold keeps sensitivity >= target
  on the clean split and on that pool.
- ``families``: Platt on the same pool with the clean split and each family of shifts weighing the
  same (framing has five shifts, geometry one); the threshold keeps sensitivity >= target on the
  clean split and on each family's pool.
- ``worst``: Platt as ``stress``; the threshold keeps sensitivity >= target on every single shift.

Which rule ships is decided by transfer (:func:`transfer`, rule ``best``): leave one family of shifts
out, fit the rule on the rest, score it on the family it never saw, and on children it was not fitted
on (two folds by patient). The clean validation split flatters every rule; how a rule holds on a
change it was not fitted on is what it will meet at a new hospital.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from cxr.evaluation import CLEAN, Member, stress_metrics
from cxr.metrics import (
    auc_confidence_interval,
    binary_metrics,
    expected_calibration_error,
    fit_calibration,
    probabilities,
    screening_threshold,
)
from cxr.model import ModelConfig
from cxr.stress import BANK, family_of, shift_by_name


@dataclass(frozen=True)
class Fit:
    temperature: float
    bias: float
    threshold: float


def _pool(logits: dict[str, np.ndarray], labels: np.ndarray, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    return np.concatenate([logits[n] for n in names]), np.tile(labels, len(names))


def _subset(logits: dict[str, np.ndarray], keep: np.ndarray) -> dict[str, np.ndarray]:
    return {name: value[keep] for name, value in logits.items()}


def _threshold(fit_tb: tuple[float, float], groups: list[list[str]], logits, labels, target: float) -> float:
    """The highest threshold keeping sensitivity >= target on each group of conditions pooled."""
    found = []
    for names in groups:
        pooled, pooled_labels = _pool(logits, labels, names)
        found.append(screening_threshold(probabilities(pooled, *fit_tb), pooled_labels, target))
    return min(found)


def _families(names: list[str]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for name in names:
        if name != CLEAN:
            grouped.setdefault(family_of(shift_by_name(name)), []).append(name)
    return grouped


def _clean_rule(logits, labels, target) -> Fit:
    tb = fit_calibration(logits[CLEAN], labels)
    return Fit(*tb, _threshold(tb, [[CLEAN]], logits, labels, target))


def _stress_rule(logits, labels, target) -> Fit:
    tb = fit_calibration(*_pool(logits, labels, list(logits)))
    return Fit(*tb, _threshold(tb, [[CLEAN], list(logits)], logits, labels, target))


def _families_rule(logits, labels, target) -> Fit:
    grouped = _families(list(logits))
    # The clean split and each family weigh the same in the fit: a shift counts 1 / its family's size.
    names = [CLEAN] + [name for group in grouped.values() for name in group]
    weights = [1.0] + [1.0 / len(group) for group in grouped.values() for _ in group]
    sample_weight = np.repeat(weights, len(labels))
    tb = fit_calibration(*_pool(logits, labels, names), sample_weight=sample_weight)
    return Fit(*tb, _threshold(tb, [[CLEAN], *grouped.values()], logits, labels, target))


def _worst_rule(logits, labels, target) -> Fit:
    tb = fit_calibration(*_pool(logits, labels, list(logits)))
    return Fit(*tb, _threshold(tb, [[name] for name in logits], logits, labels, target))


RULES: dict[str, Callable[[dict, np.ndarray, float], Fit]] = {
    "stress": _stress_rule,
    "families": _families_rule,
    "worst": _worst_rule,
    "clean": _clean_rule,
}


def fit_rule(rule: str, logits: dict[str, np.ndarray], labels: np.ndarray, target_sensitivity: float) -> Fit:
    """Temperature, bias and threshold by ``rule`` from ``logits`` (``"clean"`` and shift names)."""
    return RULES[rule](logits, labels, target_sensitivity)


def transfer(
    rule: str,
    logits: dict[str, np.ndarray],
    labels: np.ndarray,
    target_sensitivity: float,
    groups: np.ndarray | None = None,
) -> dict:
    """Leave one family out: fit ``rule`` without it on half the patients, score it on the family's
    shifts pooled on the other half (two folds, both ways: every image is scored once).

    ``groups``: each image's patient (images of one child stay in one fold; default: each image its
    own). ``{family: {sensitivity, specificity, ece}}`` plus ``"summary"``: the worst and mean of each
    over the families held out.
    """
    folds = _patient_folds(groups if groups is not None else np.arange(len(labels)))
    held_out = {}
    for family, names in _families(list(logits)).items():
        kept = {name: value for name, value in logits.items() if name not in names}
        probs, truth, predicted = [], [], []
        for fit_on in (folds, ~folds):
            fit = fit_rule(rule, _subset(kept, fit_on), labels[fit_on], target_sensitivity)
            scored, scored_labels = _pool(_subset(logits, ~fit_on), labels[~fit_on], names)
            fold_probs = probabilities(scored, fit.temperature, fit.bias)
            probs.append(fold_probs)
            truth.append(scored_labels)
            predicted.append(fold_probs >= fit.threshold)
        probs, truth, predicted = np.concatenate(probs), np.concatenate(truth), np.concatenate(predicted)
        held_out[family] = {
            "sensitivity": float(predicted[truth == 1].mean()),
            "specificity": float((~predicted[truth == 0]).mean()),
            "ece": expected_calibration_error(probs, truth),
        }
    summary = {}
    for key, worst in (("sensitivity", min), ("specificity", min), ("ece", max)):
        values = [entry[key] for entry in held_out.values()]
        summary[f"worst_{key}"], summary[f"mean_{key}"] = worst(values), float(np.mean(values))
    return {**held_out, "summary": summary}


def _patient_folds(groups: np.ndarray, seed: int = 0) -> np.ndarray:
    """True for the images of a seeded half of the patients."""
    patients = np.unique(groups)
    first = set(np.random.default_rng(seed).permutation(patients)[: len(patients) // 2].tolist())
    return np.array([g in first for g in groups.tolist()])


def compare_rules(
    logits: dict[str, np.ndarray], labels: np.ndarray, target_sensitivity: float, groups: np.ndarray | None = None
) -> dict:
    """Every rule's transfer, and the one that transfers best (:func:`best_rule`)."""
    rules = {rule: transfer(rule, logits, labels, target_sensitivity, groups) for rule in RULES}
    return {"rules": rules, "best": best_rule(rules, target_sensitivity)}


SENSITIVITY_SLACK = 0.02  # a held-out family may fall this far below the target before a rule fails


def best_rule(transfers: dict[str, dict], target_sensitivity: float) -> str:
    """The rule that transfers best: held-out sensitivity kept (worst family >= target - slack), then
    the highest worst-family specificity, then the lowest worst-family ECE. If no rule keeps the
    sensitivity, the one that comes closest."""
    summaries = {rule: result["summary"] for rule, result in transfers.items()}
    keeping = [r for r, s in summaries.items() if s["worst_sensitivity"] >= target_sensitivity - SENSITIVITY_SLACK]
    if not keeping:
        return max(summaries, key=lambda r: summaries[r]["worst_sensitivity"])
    return max(keeping, key=lambda r: (summaries[r]["worst_specificity"], -summaries[r]["worst_ece"]))


def calibrate(
    config: ModelConfig,
    logits: dict[str, np.ndarray],
    labels: np.ndarray,
    target_sensitivity: float,
    rule: str = "best",
    groups: np.ndarray | None = None,
) -> None:
    """Set ``config``'s temperature, bias, threshold, validation and stress metrics by ``rule``.

    ``logits`` maps ``"clean"`` (and each shift's name) to raw validation logits. ``rule``: one of
    ``RULES``, or ``"best"``: the one that transfers best (:func:`compare_rules`; every rule's
    transfer is recorded either way). ``groups``: each validation image's patient, for the folds.
    """
    comparison = compare_rules(logits, labels, target_sensitivity, groups) if len(logits) > 1 else None
    chosen = comparison["best"] if rule == "best" and comparison else ("clean" if rule == "best" else rule)
    fit = fit_rule(chosen, logits, labels, target_sensitivity)
    config.temperature, config.logit_bias, config.threshold = fit.temperature, fit.bias, fit.threshold
    clean = probabilities(logits[CLEAN], config.temperature, config.logit_bias)
    config.val_metrics = binary_metrics(clean, labels, config.threshold)
    config.val_metrics["auc_ci95"] = list(auc_confidence_interval(clean, labels))
    fit_on = [CLEAN] if chosen == "clean" else sorted(logits)
    config.calibration = {"rule": chosen, "fit_on": fit_on, "target_sensitivity": target_sensitivity}
    if comparison:
        config.calibration |= {"chosen_by": "transfer" if rule == "best" else "by hand", "transfer": comparison}
    shifts = [s for s in BANK if s.name in logits]
    config.stress_metrics = stress_metrics([Member(config, logits)], labels, shifts) if shifts else {}
