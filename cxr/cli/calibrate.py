"""Fit temperature, bias and screening threshold on a model's own validation split, by a rule.

    python -m cxr.cli.calibrate --weights weights/efficientnet_lite0 --data ../shared/data/chest_xray
    python -m cxr.cli.calibrate --weights weights/efficientnet_lite0 --compare --json

The rules (``cxr.calibrate``, README "The calibration rule") fit Platt temperature and bias and a
screening threshold on the clean validation X-rays and their shifted copies (``cxr.stress.BANK``).
``--compare`` scores every rule by transfer (fitted without one family of shifts, scored on it) and
writes nothing; ``--rule`` applies one. train.py ends with the same step; this command re-runs it on
saved weights (the weights file is not touched; config.json, metrics.json and the model card are
rewritten).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np

from cxr.calibrate import RULES, compare_rules
from cxr.cli import add_data_arguments, calibration_summary, command
from cxr.evaluation import cached_images, shifted_logits, validation_samples
from cxr.folder import calibrate_model, staged, write_records
from cxr.model import load_model
from cxr.stress import BANK


def transfer_table(comparison: dict) -> str:
    """Each rule's held-out-family figures as a Markdown table, the best rule named last."""
    rows = ["| rule | held-out family | sensitivity | specificity | ECE |", "|---|---|---|---|---|"]
    for rule, result in comparison["rules"].items():
        for family, m in result.items():
            if family != "summary":
                rows.append(f"| {rule} | {family} | {m['sensitivity']:.3f} | {m['specificity']:.3f} | {m['ece']:.3f} |")
        s = result["summary"]
        rows.append(
            f"| **{rule}** | worst / mean | {s['worst_sensitivity']:.3f} / {s['mean_sensitivity']:.3f} | "
            f"{s['worst_specificity']:.3f} / {s['mean_specificity']:.3f} | {s['worst_ece']:.3f} / {s['mean_ece']:.3f} |"
        )
    return "\n".join(rows) + f"\n\ntransfers best: {comparison['best']}"


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", required=True, help="weights folder to recalibrate in place")
    parser.add_argument(
        "--rule", choices=[*RULES, "best"], default="best", help="the rule to apply (best: by transfer)"
    )
    parser.add_argument("--compare", action="store_true", help="score every rule by transfer; write nothing")
    parser.add_argument("--json", action="store_true", help="with --compare: one JSON object")
    add_data_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)

    weights = Path(args.weights)
    model, config = load_model(weights)  # a broken folder fails here, before the data is decoded
    samples = validation_samples(args.data, config)
    images, labels = cached_images(samples, config, "val", args.cache_dir), np.array([s.label for s in samples])
    patients = np.array([s.patient for s in samples])
    target = config.train["args"]["target_sensitivity"]
    if args.compare:
        logits = shifted_logits(model, config, images, BANK, cache_dir=args.cache_dir)
        comparison = compare_rules(logits, labels, target, patients)
        print(json.dumps(comparison) if args.json else transfer_table(comparison))
        return 0
    calibrate_model(model, config, images, labels, target, args.rule, args.cache_dir, patients)
    with staged(weights, update=True) as folder:  # the weights file is untouched; the records follow the config
        write_records(folder, config, published_as=weights)
    print(f"{args.rule} rule: " + calibration_summary(weights, config))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
